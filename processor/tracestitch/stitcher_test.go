package tracestitch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// fakeReleased is a releasedLookup for the pure stitcher.
type fakeReleased struct {
	spans  map[pcommon.SpanID]releasedSpan
	traces map[pcommon.TraceID]pcommon.TraceID
	byKey  map[reqKey][]releasedServer
}

func (f fakeReleased) span(id pcommon.SpanID) (releasedSpan, bool) {
	s, ok := f.spans[id]
	return s, ok
}
func (f fakeReleased) trace(id pcommon.TraceID) (pcommon.TraceID, bool) {
	t, ok := f.traces[id]
	return t, ok
}
func (f fakeReleased) ingress(k reqKey, out []releasedServer) []releasedServer {
	return append(out, f.byKey[k]...)
}

// testNames is the service table of records read by recs.
var testNames = newServiceTable()

// recs reads test spans into records, as the buffer does.
func recs(t *testing.T, spans ...ts) []spanRec {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	r := newRecReader(cfg)
	var out []spanRec
	td := build(t, spans...)
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		sp := rs.ScopeSpans().At(0).Spans().At(0)
		res := rs.Resource().Attributes()
		rec, _ := r.read(sp, r.identityOf(res), testNames.intern(serviceName(res)))
		out = append(out, rec)
	}
	return out
}

// TestStitcherIsPure drives the stitcher directly, without pdata or a
// buffer: decisions come back per record, and running it twice on the same
// scratch gives the same answer.
func TestStitcherIsPure(t *testing.T) {
	in := recs(t,
		ts{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid},
		ts{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid14},
		ts{trace: traceB, id: "2222222222222222", kind: S, start: 4, end: 33, service: rv, node: rv1, rid: rid},
		ts{trace: traceC, id: "3333333333333333", parent: "2222222222222222", kind: I, start: 5, end: 6, service: "reviews"},
	)
	s := newStitcher(testNames)
	for run := 0; run < 2; run++ {
		res := s.run(in, nil, stitchOptions{requestID: true})
		for i := range in {
			assert.Equal(t, traceID(t, traceA), res.traceID[i], "record %d joins trace A", i)
		}
		assert.Equal(t, []stitchMethod{methodNone, methodRequestID, methodNone, methodParentID}, res.stitchedBy)
		assert.Equal(t, map[int]pcommon.SpanID{1: spanID(t, "1111111111111111")}, res.newParent)
		assert.Equal(t, []outcome{outcomeStitched}, res.traces)
		assert.Equal(t, [3]int{0, 1, 1}, res.stitches)
		assert.Empty(t, res.blame, "stitched fragments are repaired: nobody is blamed")
	}
}

func TestStitcherUsesReleasedSpans(t *testing.T) {
	released := fakeReleased{
		spans:  map[pcommon.SpanID]releasedSpan{spanID(t, "1111111111111111"): {traceID: traceID(t, traceA)}},
		traces: map[pcommon.TraceID]pcommon.TraceID{traceID(t, traceD): traceID(t, traceA)},
		byKey: map[reqKey][]releasedServer{requestIDKey(rid): {{
			traceID: traceID(t, traceA), spanID: spanID(t, "1111111111111111"), instance: instanceKey(pp1),
			start: pcommon.Timestamp(base), end: pcommon.Timestamp(base + 40e6), service: testNames.intern(pp),
		}}},
	}
	in := recs(t,
		// a late child by parent ID, same trace
		ts{trace: traceA, id: "5555555555555555", parent: "1111111111111111", kind: I, start: 1, end: 2, service: pp},
		// a late fragment by request ID
		ts{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid},
		// a root of a trace that was released (and moved to trace A)
		ts{trace: traceD, id: "6666666666666666", parent: "7777777777777777", kind: S, start: 3, end: 34, service: rv},
	)
	res := newStitcher(testNames).run(in, released, stitchOptions{requestID: true})
	require.Len(t, res.traceID, 3)
	for i := range in {
		assert.Equal(t, traceID(t, traceA), res.traceID[i])
	}
	assert.Equal(t, 3, res.lateSpans)
	assert.Empty(t, res.traces, "late additions are not new traces")
	assert.Equal(t, stitchMethod(methodRequestID), res.stitchedBy[1])
	assert.Equal(t, spanID(t, "1111111111111111"), res.newParent[1])
}

// TestOutcomeRule: which roots are legitimate entry points and which are
// evidence of lost context, on single units, with the SERVER spans of the
// unit as what the serving index knows.
func TestOutcomeRule(t *testing.T) {
	const (
		gw   = "istio-ingressgateway.istio-system"
		gw1  = "router~10.0.0.2~istio-ingressgateway-5d8f.istio-system~istio-system.svc.cluster.local"
		job  = "nightly-report.jobs"
		kour = "kourier-knative"
	)
	for _, tc := range []struct {
		name    string
		spans   []ts
		entry   []string
		outcome []outcome
		blame   []string
	}{
		{
			name: "gateway CLIENT root over a sidecar hop",
			spans: []ts{
				{trace: traceA, id: traceA, kind: C, start: 0, end: 50, service: gw, node: gw1, rid: rid},
				{trace: traceA, id: "1111111111111111", parent: traceA, kind: S, start: 1, end: 49, service: pp, node: pp1, rid: rid},
				{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, start: 5, end: 20, service: pp, node: pp1, rid: rid},
			},
			outcome: []outcome{outcomeConnected},
		},
		{
			name:    "client pod CLIENT root alone",
			spans:   []ts{{trace: traceA, id: traceA, kind: C, start: 0, end: 50, service: "sleep.sample", node: "sidecar~10.0.0.3~sleep-1.sample~sample.svc.cluster.local", rid: rid}},
			outcome: []outcome{outcomeConnected},
		},
		{
			name:    "front proxy SERVER root",
			spans:   []ts{{trace: traceA, id: traceA, kind: S, start: 0, end: 50, service: kour, node: "3scale-kourier-gateway", rid: rid}},
			outcome: []outcome{outcomeConnected},
		},
		{
			name: "egress CLIENT root made while its instance served a request",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 50, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 5, end: 20, service: pp, node: pp1, rid: otherRID2},
				{trace: traceB, id: "3333333333333333", parent: "2222222222222222", kind: S, start: 6, end: 19, service: rv, node: rv1, rid: otherRID2},
			},
			outcome: []outcome{outcomeConnected, outcomeDisconnected},
			blame:   []string{pp},
		},
		{
			name: "the same call from another replica is no evidence",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 50, service: pp, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 5, end: 20, service: pp, node: pp2, rid: otherRID2},
			},
			outcome: []outcome{outcomeConnected, outcomeConnected},
		},
		{
			name: "a declared entry point is never evidence",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 50, service: job, node: pp1, rid: rid},
				{trace: traceB, id: "2222222222222222", kind: C, start: 5, end: 20, service: job, node: pp1, rid: otherRID2},
			},
			entry:   []string{job},
			outcome: []outcome{outcomeConnected, outcomeConnected},
		},
		{
			name: "a CONSUMER root is where work enters",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 50, service: pp, node: pp1},
				{trace: traceB, id: "2222222222222222", kind: K, start: 5, end: 20, service: pp, node: pp1},
			},
			outcome: []outcome{outcomeConnected, outcomeConnected},
		},
		{
			name: "a parent ID naming no span is evidence, blamed on nobody",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", parent: "9999999999999999", kind: S, start: 0, end: 50, service: rv, node: rv1},
			},
			outcome: []outcome{outcomeDisconnected},
		},
		{
			name: "two roots in one trace are not one tree",
			spans: []ts{
				{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 50, service: pp, node: pp1},
				{trace: traceA, id: "2222222222222222", kind: S, start: 60, end: 70, service: rv, node: rv1},
			},
			outcome: []outcome{outcomeDisconnected},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := recs(t, tc.spans...)
			idx := newServingIndex(int64(time.Minute), 1000)
			idx.add(in, 0)
			entry := map[serviceID]bool{}
			for _, svc := range tc.entry {
				entry[testNames.intern(svc)] = true
			}
			res := newStitcher(testNames).run(in, nil, stitchOptions{requestID: true, serving: idx, entryPoints: entry})
			assert.ElementsMatch(t, tc.outcome, res.traces)
			assert.ElementsMatch(t, tc.blame, res.blame)
		})
	}
}
