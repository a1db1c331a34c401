# tracestitch — see README.md. Tools are pinned and installed by these rules.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO          ?= go
BIN         := $(CURDIR)/bin
OCB_VERSION := v0.165.0
OCB         := $(BIN)/builder-$(OCB_VERSION)
COLLECTOR   := build/otelcol-tracestitch
COMPONENT   := processor/tracestitch

.PHONY: test vet unit generate check-generated build smoke run collector jaeger e2e e2e-scale accuracy bench bench-pipeline bench-collector floors profile fuzz clean

JAEGER      := $(BIN)/jaeger

## test: everything CI checks (vet, generated code, race tests, brief fuzzing, ocb build, smoke run)
test: vet check-generated unit fuzz-brief smoke

# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a -fuzztime duration ends (go.dev/issue/75804,
# fixed in Go 1.27); a count has no deadline to race. Minimizing is bounded too.
fuzz-brief:
	$(MAKE) fuzz FUZZTIME=1500x FUZZMINTIME=50x

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

## generate: regenerate internal/metadata from metadata.yaml (mdatagen, pinned in tools/mdatagen/go.mod)
generate:
	cd $(COMPONENT) && $(GO) tool -modfile=$(CURDIR)/tools/mdatagen/go.mod mdatagen metadata.yaml

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

## jaeger: Jaeger v2 (pinned in tools/jaeger/go.mod), the Zipkin-API backend of e2e and run
jaeger: $(JAEGER)
$(JAEGER): tools/jaeger/go.mod tools/jaeger/go.sum
	mkdir -p $(BIN)
	cd tools/jaeger && $(GO) build -o $(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger

## e2e: simulator -> ocb-built collector -> Jaeger; checks stored traces and metrics against ground truth
e2e: build jaeger
	$(GO) test -tags e2e -count=1 -v ./e2e/

## e2e-scale: a front collector routing by trace ID to two collectors, each with a key stage and a stitch stage, beside one collector and beside routing by trace ID alone; then one instance stopped mid-run (SIGTERM, SIGKILL)
e2e-scale: build jaeger
	$(GO) test -tags e2e -count=1 -timeout 20m -v ./e2e/scale/

## accuracy: the simulator scenario matrix through the processor, with the accuracy table
accuracy:
	$(GO) test -count=1 -run 'TestAccuracy$$' -v ./$(COMPONENT)/ | grep -E '^(\||--- |ok|FAIL|PASS)'

## bench: tracestitch vs groupbytraceprocessor vs the regroup-only, rewrite and index floors, same input, one run; prints the tables
bench:
	$(GO) run ./bench/cmd/benchtable

## bench-pipeline: the whole collector (ocb-built, bench/pipeline) with no processor, batch, groupbytrace, tracestitch, and key + stitch stages, side by side on loopback; prints the table
BENCH_COLLECTOR := build/otelcol-bench
bench-collector: $(OCB)
	mkdir -p build
	$(OCB) --config bench/pipeline/builder-config.yaml
	cp build/otelcol-bench-src/otelcol-bench $(BENCH_COLLECTOR)

bench-pipeline: bench-collector
	$(GO) run ./bench/cmd/benchpipeline -collector $(BENCH_COLLECTOR) -profile build

## floors: the floor, rewrite floor and index floor over many rounds (ROUNDS), their costs relative to the floor's round by round
ROUNDS ?= 20
floors:
	$(GO) run ./bench/cmd/benchtable -compare "floor,rewrite floor,index floor,tracestitch" -rounds $(ROUNDS)

## profile: CPU profiles of SUBJECT's timed bench passes on SHAPE-span traces, in build/ (prints the pprof command)
SUBJECT ?= tracestitch
SHAPE ?= 100
profile:
	mkdir -p build
	$(GO) run ./bench/cmd/benchtable -cpuprofile build/cpu-$(SHAPE).out -subject "$(SUBJECT)" -shape $(SHAPE) -rounds 20

## fuzz: each fuzz target for FUZZTIME (CI runs 1500 executions of each in `make test`)
FUZZTIME ?= 2m
FUZZMINTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzStitch$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) ./$(COMPONENT)/
	$(GO) test -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) ./$(COMPONENT)/

## run: the demo — Jaeger + collector + simulated broken mesh traffic; prints the disconnected share before/after; stays up HOLD (10m)
HOLD ?= 10m
run: build jaeger
	$(GO) run ./cmd/demo -hold $(HOLD)

## collector: just the collector with config.yaml (send your own spans)
collector: build
	$(COLLECTOR) --config config.yaml

clean:
	rm -rf build bin
