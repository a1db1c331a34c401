# tracestitch — see README.md. Tools are pinned and installed by these rules.
GO          ?= go
BIN         := $(CURDIR)/bin
OCB_VERSION := v0.165.0
OCB         := $(BIN)/builder-$(OCB_VERSION)
COLLECTOR   := build/otelcol-tracestitch
COMPONENT   := processor/tracestitch

.PHONY: test vet unit generate check-generated build smoke run clean

## test: everything CI checks (vet, generated code, race tests, ocb build, smoke run)
test: vet check-generated unit smoke

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

## generate: regenerate internal/metadata from metadata.yaml (mdatagen is a go tool of this module)
generate:
	cd $(COMPONENT) && $(GO) tool mdatagen metadata.yaml

check-generated: generate
	@if [ -n "$$(git status --porcelain -- $(COMPONENT))" ]; then \
		git status --porcelain -- $(COMPONENT); git diff -- $(COMPONENT) | head -50; \
		echo "generated code is out of date: run 'make generate' and commit"; exit 1; fi

$(OCB):
	mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)
	mv $(BIN)/builder $(OCB)

## build: the collector distribution with tracestitch (ocb, builder-config.yaml)
build: $(OCB)
	mkdir -p build
	$(OCB) --config builder-config.yaml
	cp build/otelcol-tracestitch-src/otelcol-tracestitch $(COLLECTOR)

smoke: build
	BIN=$(COLLECTOR) bash scripts/smoke.sh

## run: build the collector and start it with config.yaml
run: build
	$(COLLECTOR) --config config.yaml

clean:
	rm -rf build bin
