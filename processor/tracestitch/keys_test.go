package tracestitch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
)

func keyMode(c *Config) { c.Mode = ModeKey }

// keysOf returns the key attribute of every released span, by span ID and
// kind; it fails on a span without one.
func keysOf(t *testing.T, h *harness) map[key]string {
	t.Helper()
	out := map[key]string{}
	for _, s := range h.out() {
		k, ok := s.attrs["tracestitch.stitch_key"].(string)
		require.True(t, ok, "span %s/%v has no key", s.spanID, s.kind)
		out[key{s.spanID, s.kind}] = k
	}
	return out
}

// TestKeyModeGivesARequestOneKey: every span of a trace carries one key,
// and all fragments of a request get the same one: the root's request ID
// (character 14 masked), else a request ID of the trace, else the trace
// ID's low 64 bits (so a 128-bit fragment meets its 64-bit trace). Nothing
// is stitched and no outcome is counted.
func TestKeyModeGivesARequestOneKey(t *testing.T) {
	h := newHarness(t, keyMode)
	const masked = "6f1c3b5e-2d7a-0c4e-8b1a-0c3d5e7f9a2b"
	h.send(
		// the request's main trace, rooted at a gateway CLIENT span
		ts{trace: traceA, id: "1111111111111111", kind: C, start: 0, end: 50, service: "istio-ingressgateway.istio-system", rid: rid},
		ts{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: S, start: 1, end: 49, service: pp, node: pp1, rid: rid},
		// a fragment whose sidecar rewrote character 14
		ts{trace: traceB, id: "3333333333333333", kind: C, start: 5, end: 20, service: pp, node: pp1, rid: rid14},
		ts{trace: traceB, id: "4444444444444444", parent: "3333333333333333", kind: S, start: 6, end: 19, service: rv, node: rv1, rid: rid14},
		// a trace whose root has no request ID, a child does
		ts{trace: traceC, id: "5555555555555555", kind: I, start: 0, end: 9, service: "batch"},
		ts{trace: traceC, id: "6666666666666666", parent: "5555555555555555", kind: C, start: 1, end: 8, service: "batch", rid: ridOther},
		// no request ID at all: 64- and 128-bit IDs with the same low half
		ts{trace: traceD, id: "7777777777777777", kind: S, start: 0, end: 9, service: dt},
		ts{trace: "4bf92f3577b34da6" + traceD, id: "8888888888888888", parent: "7777777777777777", kind: S, start: 1, end: 8, service: "details"},
	)
	h.advance(2 * time.Second)
	keys := keysOf(t, h)
	for _, k := range []key{{"1111111111111111", C}, {"2222222222222222", S}, {"3333333333333333", C}, {"4444444444444444", S}} {
		assert.Equal(t, masked, keys[k], "request ID key of %v", k)
	}
	assert.Equal(t, "6f1c3b5e-2d7a-0c4e-8b1a-0c3d5e7f9a2c", keys[key{"5555555555555555", I}], "a request ID found in the trace")
	assert.Equal(t, keys[key{"5555555555555555", I}], keys[key{"6666666666666666", C}])
	assert.Equal(t, traceD, keys[key{"7777777777777777", S}], "the trace ID's low 64 bits")
	assert.Equal(t, traceD, keys[key{"8888888888888888", S}])
	for _, s := range h.out() {
		assert.NotContains(t, s.attrs, stitchedByAttribute, "nothing is stitched")
	}
	assert.Equal(t, pad(traceB), find(t, h.out(), "3333333333333333", C).traceID)
	assert.Equal(t, int64(2), h.counter("processor_tracestitch_keys", attribute.String("source", "root_request_id")))
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_keys", attribute.String("source", "request_id")))
	assert.Equal(t, int64(2), h.counter("processor_tracestitch_keys", attribute.String("source", "trace_id")))
	assert.Zero(t, h.counter("processor_tracestitch_key_conflicts"))
	assert.Zero(t, h.counter("processor_tracestitch_traces"), "key mode counts no outcomes")
	h.shutdown()
}

// TestKeyModeLateSpansKeepTheKey: spans that come after their trace was
// released get the key it left with, while late_span_ttl lasts; a trace
// with two request IDs is counted.
func TestKeyModeLateSpansKeepTheKey(t *testing.T) {
	h := newHarness(t, func(c *Config) { keyMode(c); c.LateSpanTTL = 5 * time.Second })
	h.send(
		ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid},
		ts{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, service: pp, node: pp1, rid: otherRID2},
	)
	h.advance(2 * time.Second)
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_key_conflicts"))
	first := keysOf(t, h)[key{"1111111111111111", S}]

	// a late span without request ID, under the released trace
	h.send(ts{trace: traceA, id: "3333333333333333", parent: "2222222222222222", kind: S, service: rv})
	h.advance(2 * time.Second)
	assert.Equal(t, first, keysOf(t, h)[key{"3333333333333333", S}], "the key the trace left with")
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_keys", attribute.String("source", "released")))

	// after the TTL the trace is unknown again
	h.advance(6 * time.Second)
	h.send(ts{trace: traceA, id: "4444444444444444", parent: "2222222222222222", kind: S, service: rv})
	h.advance(2 * time.Second)
	assert.Equal(t, traceA, keysOf(t, h)[key{"4444444444444444", S}], "computed anew: the trace ID's low 64 bits")
	h.shutdown()
}

func TestCanonicalRequestID(t *testing.T) {
	assert.Equal(t, "6f1c3b5e-2d7a-0c4e-8b1a-0c3d5e7f9a2b", canonicalRequestID("6F1C3B5E-2D7A-9C4E-8B1A-0C3D5E7F9A2B"))
	assert.Equal(t, canonicalRequestID(rid), canonicalRequestID(rid14), "character 14 is masked")
	assert.Equal(t, "req-42", canonicalRequestID("req-42"), "other values as they are")
}
