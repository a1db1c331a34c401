#!/usr/bin/env bash
# Smoke check of the ocb-built collector: start it with config.yaml on
# loopback ports of its own, POST a real Envoy Zipkin span and a broken
# request-ID-only trace, and check that the spans come out of the debug
# exporter and the tracestitch counters show on the Prometheus endpoint.
# Also checks that a bad tracestitch config is refused at start.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/otelcol-tracestitch}
SAMPLES=processor/tracestitch/testdata/samples
WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill "$PID"; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export ZIPKIN_ENDPOINT=127.0.0.1:19411 OTLP_GRPC_ENDPOINT=127.0.0.1:14317 \
  OTLP_HTTP_ENDPOINT=127.0.0.1:14318 METRICS_PORT=18888 TRACESTITCH_WAIT=200ms \
  HEALTH_ENDPOINT=127.0.0.1:23133 \
  DEBUG_VERBOSITY=detailed

wait_for() { # url, seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

echo "smoke: refusing a bad config"
sed 's/max_buffered_spans: 500000/max_buffered_spans: 0/' config.yaml > "$WORK/bad.yaml"
if timeout 20 "$BIN" --config "$WORK/bad.yaml" > "$WORK/bad.log" 2>&1; then
  echo "FAIL: collector started with max_buffered_spans: 0"; exit 1
fi
grep -q "max_buffered_spans must be greater than 0" "$WORK/bad.log" || { cat "$WORK/bad.log"; echo "FAIL: error does not name the key"; exit 1; }

echo "smoke: validating the deployment configs"
for f in deploy/collector-front.yaml deploy/collector-key.yaml deploy/collector-stitch.yaml; do
  "$BIN" validate --config "$f" || { echo "FAIL: $f does not validate"; exit 1; }
done

echo "smoke: starting $BIN"
"$BIN" --config config.yaml > "$WORK/collector.log" 2>&1 &
PID=$!
wait_for "http://127.0.0.1:$METRICS_PORT/metrics" 30 || { cat "$WORK/collector.log"; echo "FAIL: collector did not start"; exit 1; }
wait_for "http://$HEALTH_ENDPOINT/" 10 || { echo "FAIL: health_check does not answer"; exit 1; }
for f in envoy-real-kourier-root request-id-only; do
  curl -fsS -X POST -H 'Content-Type: application/json' --data-binary "@$SAMPLES/$f.zipkin.json" \
    "http://$ZIPKIN_ENDPOINT/api/v2/spans"
done

metrics=""
for _ in $(seq 1 100); do
  metrics=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics")
  # every outcome is reported (at 0) from the start: wait for the count
  if grep -q 'otelcol_processor_tracestitch_traces{outcome="stitched",processor="tracestitch"} 1$' <<<"$metrics"; then break; fi
  sleep 0.1
done
echo "$metrics" | grep '^otelcol_processor_tracestitch' || true
grep -q 'otelcol_processor_tracestitch_traces{outcome="stitched",processor="tracestitch"} 1$' <<<"$metrics" || { cat "$WORK/collector.log"; echo "FAIL: no stitched trace counted"; exit 1; }
grep -q 'otelcol_processor_tracestitch_traces{outcome="connected",processor="tracestitch"} 1$' <<<"$metrics" || { echo "FAIL: no connected trace counted"; exit 1; }
grep -q 'otelcol_processor_tracestitch_stitches{method="request_id",processor="tracestitch"} 1$' <<<"$metrics" || { echo "FAIL: no request_id stitch counted"; exit 1; }
for _ in $(seq 1 50); do
  [ "$(grep -c 'Span #' "$WORK/collector.log" || true)" -ge 4 ] && break
  sleep 0.1
done
[ "$(grep -c 'Span #' "$WORK/collector.log" || true)" -eq 4 ] || { cat "$WORK/collector.log"; echo "FAIL: expected 4 spans out of the debug exporter"; exit 1; }
grep -q 'tracestitch.stitched_by: Str(request_id)' "$WORK/collector.log" || { echo "FAIL: stitched span not marked"; exit 1; }
echo "smoke: ok"
