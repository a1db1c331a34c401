package tracestitch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
)

const (
	S = ptrace.SpanKindServer
	C = ptrace.SpanKindClient
	I = ptrace.SpanKindInternal
	K = ptrace.SpanKindConsumer

	traceA = "a1b2c3d4e5f60718"
	traceB = "0f0e0d0c0b0a0908"
	traceC = "1a2b3c4d5e6f7081"
	traceD = "d1d2d3d4d5d6d7d8"
	// trace128 shares its low 64 bits with traceA: an app with 128-bit IDs
	// under an Envoy that keeps 64.
	trace128 = "4bf92f3577b34da6" + traceA

	rid       = "6f1c3b5e-2d7a-9c4e-8b1a-0c3d5e7f9a2b"
	rid14     = "6f1c3b5e-2d7a-bc4e-8b1a-0c3d5e7f9a2b" // Envoy rewrote character 14
	ridOther  = "6f1c3b5e-2d7a-9c4e-8b1a-0c3d5e7f9a2c"
	otherRID2 = "11111111-2222-4333-8444-555555555555"

	pp   = "productpage.default"
	rv   = "reviews.default"
	rt   = "ratings.default"
	dt   = "details.default"
	pp1  = "sidecar~10.0.0.5~productpage-v1-7d9c.default~default.svc.cluster.local"
	pp2  = "sidecar~10.0.0.6~productpage-v1-8e1f.default~default.svc.cluster.local"
	rv1  = "sidecar~10.0.0.9~reviews-v2-5b64.default~default.svc.cluster.local"
	rt1  = "sidecar~10.0.0.12~ratings-v1-1a2b.default~default.svc.cluster.local"
	dt1  = "sidecar~10.0.0.14~details-v1-3c4d.default~default.svc.cluster.local"
	full = "00000000000000000000000000000000"
)

func pad(trace string) string {
	if len(trace) == 16 {
		return "0000000000000000" + trace
	}
	return trace
}

type key struct {
	id   string
	kind ptrace.SpanKind
}

type stitchCase struct {
	name  string
	cfg   func(*Config)
	spans []ts
	// parents and traces of released spans, checked for every listed span.
	parents map[key]string
	traces  map[key]string
	// stitchedBy lists the fragment roots the processor attached.
	stitchedBy map[key]string
	outcomes   map[string]int64
	stitches   map[string]int64
	ambiguous  int64
	blame      map[string]int64
}

func TestStitching(t *testing.T) {
	cases := []stitchCase{
		{
			name: "one trace, shared client/server span ID, connected and untouched",
			spans: []ts{
				{trace: traceA, id: "2222222222222222", kind: S, start: 4, end: 33, service: rv, node: rv1},
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1},
				{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, start: 3, end: 34, service: pp, node: pp1},
			},
			parents: map[key]string{
				{"2222222222222222", C}: "1111111111111111",
				{"2222222222222222", S}: "",
			},
			traces:   map[key]string{{"2222222222222222", S}: pad(traceA)},
			outcomes: map[string]int64{"connected": 1},
		},
		{
			name: "fragment under a parent span of another trace ID is merged",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1},
				{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, start: 3, end: 34, service: pp, node: pp1},
				{trace: traceB, id: "3333333333333333", parent: "2222222222222222", kind: S, start: 4, end: 33, service: rv, node: rv1},
				{trace: traceB, id: "4444444444444444", parent: "3333333333333333", kind: C, start: 5, end: 30, service: rv, node: rv1},
			},
			traces: map[key]string{
				{"3333333333333333", S}: pad(traceA),
				{"4444444444444444", C}: pad(traceA),
			},
			stitchedBy: map[key]string{{"3333333333333333", S}: "parent_id"},
			outcomes:   map[string]int64{"stitched": 1},
			stitches:   map[string]int64{"parent_id": 1},
		},
		{
			name: "128-bit app spans under a 64-bit Envoy trace",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1},
				{trace: trace128, id: "6666666666666666", parent: "1111111111111111", kind: S, start: 1, end: 39, service: "productpage"},
				{trace: trace128, id: "7777777777777777", parent: "6666666666666666", kind: C, start: 2, end: 35, service: "productpage"},
				{trace: trace128, id: "8888888888888888", parent: "7777777777777777", kind: C, start: 3, end: 34, service: pp, node: pp1},
			},
			traces: map[key]string{
				{"6666666666666666", S}: pad(traceA),
				{"7777777777777777", C}: pad(traceA),
				{"8888888888888888", C}: pad(traceA),
			},
			parents:    map[key]string{{"6666666666666666", S}: "1111111111111111"},
			stitchedBy: map[key]string{{"6666666666666666", S}: "parent_id"},
			outcomes:   map[string]int64{"stitched": 1},
			stitches:   map[string]int64{"parent_id": 1},
		},
		{
			name: "missing parent stays disconnected",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1},
				{trace: traceA, id: "3333333333333333", parent: "9999999999999999", kind: C, start: 5, end: 30, service: rv, node: rv1},
			},
			parents:  map[key]string{{"3333333333333333", C}: "9999999999999999"},
			outcomes: map[string]int64{"disconnected": 1},
		},
		{
			name: "request ID only: single hop",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: S, start: 4, end: 33, service: rv, node: rv1, rid: rid},
			},
			parents: map[key]string{
				{"2222222222222222", C}: "1111111111111111",
				{"2222222222222222", S}: "",
			},
			traces: map[key]string{
				{"2222222222222222", C}: pad(traceA),
				{"2222222222222222", S}: pad(traceA),
			},
			stitchedBy: map[key]string{{"2222222222222222", C}: "request_id"},
			outcomes:   map[string]int64{"stitched": 1},
			stitches:   map[string]int64{"request_id": 1},
		},
		{
			name: "request ID only: chain productpage -> reviews -> ratings",
			spans: []ts{
				{trace: traceC, id: "3333333333333333", kind: C, start: 20, end: 80, service: rv, node: rv1, rid: rid},
				{trace: traceC, id: "3333333333333333", kind: S, start: 21, end: 79, service: rt, node: rt1, rid: rid},
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 10, end: 90, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: S, start: 11, end: 89, service: rv, node: rv1, rid: rid},
			},
			parents: map[key]string{
				{"2222222222222222", C}: "1111111111111111",
				{"3333333333333333", C}: "2222222222222222",
			},
			traces: map[key]string{
				{"2222222222222222", C}: pad(traceA),
				{"3333333333333333", C}: pad(traceA),
				{"3333333333333333", S}: pad(traceA),
				{"2222222222222222", S}: pad(traceA),
			},
			stitchedBy: map[key]string{
				{"2222222222222222", C}: "request_id",
				{"3333333333333333", C}: "request_id",
			},
			outcomes: map[string]int64{"stitched": 1},
			stitches: map[string]int64{"request_id": 2},
		},
		{
			name: "request ID only: concurrent fan-out and a retry share one request ID",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 10, end: 30, service: pp, node: pp1, rid: rid, attrs: map[string]any{"response_flags": "UT"}},
				{trace: traceB, id: "2222222222222222", kind: S, start: 11, end: 30, service: rv, node: rv1, rid: rid},
				{trace: traceC, id: "3333333333333333", kind: C, start: 31, end: 60, service: pp, node: pp1, rid: rid},
				{trace: traceC, id: "3333333333333333", kind: S, start: 32, end: 59, service: rv, node: rv1, rid: rid},
				{trace: traceD, id: "4444444444444444", kind: C, start: 10, end: 50, service: pp, node: pp1, rid: rid},
				{trace: traceD, id: "4444444444444444", kind: S, start: 11, end: 49, service: dt, node: dt1, rid: rid},
			},
			parents: map[key]string{
				{"2222222222222222", C}: "1111111111111111",
				{"3333333333333333", C}: "1111111111111111",
				{"4444444444444444", C}: "1111111111111111",
			},
			traces: map[key]string{
				{"2222222222222222", C}: pad(traceA),
				{"3333333333333333", C}: pad(traceA),
				{"4444444444444444", C}: pad(traceA),
				{"2222222222222222", S}: pad(traceA),
				{"3333333333333333", S}: pad(traceA),
				{"4444444444444444", S}: pad(traceA),
			},
			outcomes: map[string]int64{"stitched": 1},
			stitches: map[string]int64{"request_id": 3},
		},
		{
			name: "app forwards nothing: stays disconnected, blamed on the caller",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: otherRID2},
				{trace: traceB, id: "2222222222222222", kind: S, start: 4, end: 33, service: rv, node: rv1, rid: otherRID2},
			},
			traces: map[key]string{
				{"1111111111111111", S}: pad(traceA),
				{"2222222222222222", C}: pad(traceB),
			},
			parents:  map[key]string{{"2222222222222222", C}: ""},
			outcomes: map[string]int64{"connected": 1, "disconnected": 1},
			blame:    map[string]int64{pp: 1},
		},
		{
			name: "same request ID served twice by one instance at overlapping times: ambiguous",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceD, id: "5555555555555555", kind: S, start: 5, end: 95, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 10, end: 50, service: pp, node: pp1, rid: rid},
			},
			traces:    map[key]string{{"2222222222222222", C}: pad(traceB)},
			parents:   map[key]string{{"2222222222222222", C}: ""},
			outcomes:  map[string]int64{"connected": 2, "disconnected": 1},
			ambiguous: 1,
			blame:     map[string]int64{pp: 1},
		},
		{
			// Two services behind one identity (e.g. only host.name set on a
			// VM): the orphan's own service's ingress is its parent, the other
			// service's ingress with the same request ID is no candidate.
			name: "ingress of another service on the same instance is no candidate",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceD, id: "5555555555555555", kind: S, start: 5, end: 95, service: rv, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 10, end: 50, service: pp, node: pp1, rid: rid},
			},
			traces:     map[key]string{{"2222222222222222", C}: pad(traceA)},
			parents:    map[key]string{{"2222222222222222", C}: "1111111111111111"},
			stitchedBy: map[key]string{{"2222222222222222", C}: "request_id"},
			outcomes:   map[string]int64{"stitched": 1, "connected": 1},
			stitches:   map[string]int64{"request_id": 1},
		},
		{
			name: "same request ID on two replicas: each fragment finds its own instance",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceD, id: "5555555555555555", kind: S, start: 0, end: 100, service: pp, node: pp2, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 10, end: 50, service: pp, node: pp1, rid: rid},
				{trace: traceC, id: "3333333333333333", kind: C, start: 10, end: 50, service: pp, node: pp2, rid: rid},
			},
			parents: map[key]string{
				{"2222222222222222", C}: "1111111111111111",
				{"3333333333333333", C}: "5555555555555555",
			},
			traces: map[key]string{
				{"2222222222222222", C}: pad(traceA),
				{"3333333333333333", C}: pad(traceD),
			},
			outcomes: map[string]int64{"stitched": 2},
			stitches: map[string]int64{"request_id": 2},
		},
		{
			name: "request IDs differing only in character 14 match",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid14},
			},
			parents:  map[key]string{{"2222222222222222", C}: "1111111111111111"},
			traces:   map[key]string{{"2222222222222222", C}: pad(traceA)},
			outcomes: map[string]int64{"stitched": 1},
			stitches: map[string]int64{"request_id": 1},
		},
		{
			name: "request IDs differing elsewhere do not match",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: ridOther},
			},
			parents:  map[key]string{{"2222222222222222", C}: ""},
			outcomes: map[string]int64{"connected": 1, "disconnected": 1},
			blame:    map[string]int64{pp: 1},
		},
		{
			// The outcome rule cannot see a call that outlives the request
			// it was made for: no SERVER span of its instance contains it.
			name: "async call outliving its request is not stitched and not seen as lost",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 30, end: 80, service: pp, node: pp1, rid: rid},
			},
			parents:  map[key]string{{"2222222222222222", C}: ""},
			outcomes: map[string]int64{"connected": 2},
		},
		{
			name: "time_tolerance admits a parent that ends slightly early",
			cfg:  func(c *Config) { c.RequestID.TimeTolerance = 2 * time.Millisecond },
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 41, service: pp, node: pp1, rid: rid},
			},
			parents:  map[key]string{{"2222222222222222", C}: "1111111111111111"},
			traces:   map[key]string{{"2222222222222222", C}: pad(traceA)},
			outcomes: map[string]int64{"stitched": 1},
			stitches: map[string]int64{"request_id": 1},
		},
		{
			name: "a SERVER root with a known request ID is a new request, not a fragment",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 100, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: S, start: 10, end: 50, service: pp, node: pp1, rid: rid},
			},
			outcomes: map[string]int64{"connected": 2},
		},
		{
			name: "request-ID fallback disabled",
			cfg:  func(c *Config) { c.RequestID.Enabled = false },
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid},
			},
			parents:  map[key]string{{"2222222222222222", C}: ""},
			outcomes: map[string]int64{"connected": 1, "disconnected": 1},
			blame:    map[string]int64{pp: 1},
		},
		{
			name: "OTel SDK app spans: request ID as a string slice, instance from the resource",
			spans: []ts{
				{trace: trace128, id: "6666666666666666", kind: S, start: 0, end: 40, service: "productpage",
					attrs: map[string]any{"http.request.header.x-request-id": []any{rid}, "k8s.pod.name": "productpage-v1-7d9c"}},
				{trace: traceB, id: "7777777777777777", kind: C, start: 3, end: 34, service: "productpage",
					attrs: map[string]any{"http.request.header.x-request-id": []any{rid}, "k8s.pod.name": "productpage-v1-7d9c"}},
			},
			parents:  map[key]string{{"7777777777777777", C}: "6666666666666666"},
			traces:   map[key]string{{"7777777777777777", C}: trace128},
			outcomes: map[string]int64{"stitched": 1},
			stitches: map[string]int64{"request_id": 1},
		},
		{
			name: "self-parent and a parent cycle do not loop and stay disconnected",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", parent: "1111111111111111", kind: S, start: 0, end: 40, service: pp},
				{trace: traceB, id: "2222222222222222", parent: "3333333333333333", kind: I, start: 0, end: 40, service: pp},
				{trace: traceB, id: "3333333333333333", parent: "2222222222222222", kind: I, start: 0, end: 40, service: pp},
			},
			parents: map[key]string{
				{"1111111111111111", S}: "1111111111111111",
				{"2222222222222222", I}: "3333333333333333",
				{"3333333333333333", I}: "2222222222222222",
			},
			outcomes: map[string]int64{"disconnected": 2},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			for _, s := range tc.spans {
				h.send(s) // one batch per span: arrival order as listed
			}
			h.advance(2 * time.Second)
			require.Equal(t, h.in, h.sink.SpanCount(), "all spans released after the wait")
			out := h.out()
			// sent holds each input span by ID and kind; a key sent twice
			// maps to nothing
			sent := map[key]ts{}
			seen := map[key]bool{}
			for _, sp := range tc.spans {
				k := key{sp.id, sp.kind}
				if seen[k] {
					delete(sent, k)
					continue
				}
				seen[k], sent[k] = true, sp
			}
			for k, want := range tc.parents {
				assert.Equal(t, want, find(t, out, k.id, k.kind).parentID, "parent of %v", k)
			}
			for k, want := range tc.traces {
				assert.Equal(t, want, find(t, out, k.id, k.kind).traceID, "trace of %v", k)
			}
			for _, s := range out {
				by, ok := s.attrs[stitchedByAttribute]
				want, wantOK := tc.stitchedBy[key{s.spanID, s.kind}]
				if wantOK {
					assert.Equal(t, want, by, "stitched_by of %s", s.spanID)
				} else if tc.stitchedBy != nil {
					assert.False(t, ok, "unexpected stitched_by on %s", s.spanID)
				}
				in, once := sent[key{s.spanID, s.kind}]
				if !once {
					continue // a duplicate span ID and kind: the listed checks cover it
				}
				// a span the case does not list is untouched
				if _, listed := tc.traces[key{s.spanID, s.kind}]; !listed {
					assert.Equal(t, pad(in.trace), s.traceID, "%s/%v keeps its trace ID", s.spanID, s.kind)
				}
				if _, listed := tc.parents[key{s.spanID, s.kind}]; !listed {
					assert.Equal(t, in.parent, s.parentID, "%s/%v keeps its parent", s.spanID, s.kind)
				}
				orig, moved := s.attrs["tracestitch.original_trace_id"]
				if s.traceID != pad(in.trace) {
					assert.Equal(t, pad(in.trace), orig, "%s/%v keeps the trace ID it came with", s.spanID, s.kind)
				} else {
					assert.False(t, moved, "original trace ID recorded only when it changed")
				}
			}
			assert.Equal(t, tc.outcomes, h.outcomes())
			for _, m := range []string{"parent_id", "request_id"} {
				assert.Equal(t, tc.stitches[m], h.counter("processor_tracestitch_stitches", attribute.String("method", m)), "stitches{%s}", m)
			}
			assert.Equal(t, tc.ambiguous, h.counter("processor_tracestitch_ambiguous"))
			var blamed int64
			for svc, n := range tc.blame {
				assert.Equal(t, n, h.counter("processor_tracestitch_broken_propagation", attribute.String("culprit_service", svc)), "blame %s", svc)
				blamed += n
			}
			assert.Equal(t, blamed, h.counter("processor_tracestitch_broken_propagation"), "no other service blamed")
			h.shutdown()
		})
	}
}
