package tracestitch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/client"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor/processortest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadata"
	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadatatest"
)

func TestQuietPeriodRestartsWithEachSpan(t *testing.T) {
	h := newHarness(t, nil)
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp})
	h.advance(900 * time.Millisecond)
	h.send(ts{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, service: pp})
	h.advance(900 * time.Millisecond)
	assert.Zero(t, h.sink.SpanCount(), "the second span restarted the quiet period")
	h.advance(200 * time.Millisecond)
	require.Len(t, h.sink.AllTraces(), 1, "released once, as one batch")
	assert.Equal(t, 2, h.sink.AllTraces()[0].SpanCount())
	assert.Equal(t, map[string]int64{"connected": 1}, h.outcomes())
	h.shutdown()
}

func TestMaxWaitCapsABusyTrace(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxWait = 3 * time.Second })
	for i := 0; i < 5; i++ {
		h.send(ts{trace: traceA, id: fmt.Sprintf("%016x", i+1), kind: S, service: pp})
		h.advance(500 * time.Millisecond)
	}
	assert.Zero(t, h.sink.SpanCount(), "2.5s: still under max_wait")
	h.send(ts{trace: traceA, id: "00000000000000ff", kind: S, service: pp})
	h.advance(500 * time.Millisecond)
	assert.Equal(t, 6, h.sink.SpanCount(), "released at max_wait although never quiet")
	h.shutdown()
}

func TestEvictionReleasesOldestEarly(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBufferedSpans = 5 })
	for i, tr := range []string{traceA, traceB, traceC} {
		h.send(
			ts{trace: tr, id: fmt.Sprintf("%016x", 2*i+1), kind: S, service: pp},
			ts{trace: tr, id: fmt.Sprintf("%016x", 2*i+2), parent: fmt.Sprintf("%016x", 2*i+1), kind: C, service: pp},
		)
		h.clock.Add(10 * time.Millisecond)
	}
	require.Len(t, h.sink.AllTraces(), 1, "one trace over the bound")
	out := flatten(h.sink.AllTraces()...)
	assert.Equal(t, pad(traceA), out[0].traceID, "the oldest trace leaves first")
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_traces_evicted"))
	metadatatest.AssertEqualProcessorTracestitchSpansBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 4, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch"))}}, metricdatatest.IgnoreTimestamp())
	h.shutdown()
	metadatatest.AssertEqualProcessorTracestitchSpansBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 0, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch"))}}, metricdatatest.IgnoreTimestamp())
}

// TestEvictionIgnoresTheCallersContext: the traces an add evicts belong to
// other clients; they leave with a context of their own, so a caller whose
// context is cancelled, or carries its own client metadata, neither drops
// them nor passes its metadata on.
func TestEvictionIgnoresTheCallersContext(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBufferedSpans = 2 })
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp},
		ts{trace: traceB, id: "2222222222222222", kind: S, service: rv})
	var seen []context.Context
	h.p.next = consumerFunc(func(ctx context.Context, td ptrace.Traces) error {
		seen = append(seen, ctx)
		return h.sink.ConsumeTraces(ctx, td)
	})
	ctx, cancel := context.WithCancel(client.NewContext(context.Background(),
		client.Info{Metadata: client.NewMetadata(map[string][]string{"tenant": {"caller"}})}))
	cancel()
	td := build(t, ts{trace: traceC, id: "3333333333333333", kind: S, service: dt})
	h.in += td.SpanCount()
	require.NoError(t, h.p.ConsumeTraces(ctx, td))
	require.Equal(t, 1, h.sink.SpanCount(), "the oldest trace was evicted and handed on")
	assert.Zero(t, h.counter("processor_tracestitch_spans_dropped"))
	require.NotEmpty(t, seen)
	for _, c := range seen {
		assert.NoError(t, c.Err(), "not the caller's cancelled context")
		assert.Empty(t, client.FromContext(c).Metadata.Get("tenant"), "not the caller's metadata")
	}
	h.shutdown()
}

// consumerFunc adapts a function to consumer.Traces.
type consumerFunc func(context.Context, ptrace.Traces) error

func (f consumerFunc) ConsumeTraces(ctx context.Context, td ptrace.Traces) error { return f(ctx, td) }

func (consumerFunc) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: true}
}

func TestShutdownFlushesEverything(t *testing.T) {
	h := newHarness(t, nil)
	h.send(
		ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40},
		ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34},
		ts{trace: traceC, id: "3333333333333333", kind: S, service: rv},
	)
	assert.Zero(t, h.sink.SpanCount())
	h.shutdown()
	assert.Equal(t, map[string]int64{"stitched": 1, "connected": 1}, h.outcomes(), "flushed units are stitched too")
	metadatatest.AssertEqualProcessorTracestitchTraces(t, h.tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch"), attribute.String("outcome", "stitched"))},
		{Value: 1, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch"), attribute.String("outcome", "connected"))},
	}, metricdatatest.IgnoreTimestamp())
}

func TestParentWaitsForFreshFragment(t *testing.T) {
	h := newHarness(t, nil)
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40})
	h.advance(800 * time.Millisecond)
	h.send(ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34})
	h.advance(300 * time.Millisecond)
	assert.Zero(t, h.sink.SpanCount(), "the parent's trace is due but its fragment is not quiet yet")
	h.advance(800 * time.Millisecond)
	require.Len(t, h.sink.AllTraces(), 1, "both leave together")
	out := h.out()
	assert.Equal(t, pad(traceA), find(t, out, "2222222222222222", C).traceID)
	assert.Equal(t, map[string]int64{"stitched": 1}, h.outcomes())
	h.shutdown()
}

func TestLateFragmentJoinsReleasedTrace(t *testing.T) {
	h := newHarness(t, nil)
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40})
	h.advance(2 * time.Second)
	require.Equal(t, 1, h.sink.SpanCount())
	h.send(
		ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34},
		ts{trace: traceB, id: "2222222222222222", kind: S, service: rv, node: rv1, rid: rid, start: 4, end: 33},
		// a late child of the released trace, by parent ID
		ts{trace: traceA, id: "5555555555555555", parent: "1111111111111111", kind: I, service: pp, start: 1, end: 2},
	)
	h.advance(2 * time.Second)
	out := h.out()
	c := find(t, out, "2222222222222222", C)
	assert.Equal(t, pad(traceA), c.traceID)
	assert.Equal(t, "1111111111111111", c.parentID)
	assert.Equal(t, "request_id", c.attrs[stitchedByAttribute])
	assert.Equal(t, pad(traceA), find(t, out, "2222222222222222", S).traceID)
	assert.Equal(t, pad(traceA), find(t, out, "5555555555555555", I).traceID)
	assert.Equal(t, int64(3), h.counter("processor_tracestitch_late_spans"))
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_stitches", attribute.String("method", "request_id")))
	assert.Equal(t, map[string]int64{"connected": 1}, h.outcomes(), "a trace is counted once, when it is first released")
	h.shutdown()
}

// TestReleasesStitchInTurn: releases are stitched outside the buffer lock,
// in the order they were detached. Here the later release is ready first;
// it must wait, or it would not find the earlier one's spans in the
// released-span index and the late fragment would stay apart.
func TestReleasesStitchInTurn(t *testing.T) {
	h := newHarness(t, nil)
	detachDue := func() *release {
		return h.p.buf.takeDue(h.clock.Now())
	}
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40})
	h.clock.Add(2 * time.Second)
	first := detachDue()
	h.send(
		ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34},
		ts{trace: traceB, id: "2222222222222222", kind: S, service: rv, node: rv1, rid: rid, start: 4, end: 33},
	)
	h.clock.Add(2 * time.Second)
	second := detachDue()
	require.Len(t, first.units, 1)
	require.Len(t, second.units, 1)

	secondDone := make(chan []*unit)
	go func() { secondDone <- h.p.stitch(second) }()
	require.Eventually(t, func() bool { return h.p.stage.waitingReleases() == 1 },
		10*time.Second, time.Millisecond, "the later release waits for its turn")
	select {
	case <-secondDone:
		t.Fatal("the later release was stitched before the earlier one")
	default:
	}
	h.p.emit(context.Background(), h.p.stitch(first))
	h.p.emit(context.Background(), <-secondDone)

	out := h.out()
	c := find(t, out, "2222222222222222", C)
	assert.Equal(t, pad(traceA), c.traceID, "stitched to the span of the earlier release")
	assert.Equal(t, "1111111111111111", c.parentID)
	assert.Equal(t, pad(traceA), find(t, out, "2222222222222222", S).traceID)
	h.shutdown()
}

// TestFirstOrphanJoinsAfterItsIngressLeft: a service's first request-ID
// orphan joins the ingress span that was released before it came, as any
// later one does: the result does not depend on what came before.
func TestFirstOrphanJoinsAfterItsIngressLeft(t *testing.T) {
	h := newHarness(t, nil)
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40})
	h.advance(2 * time.Second)
	require.Equal(t, 1, h.sink.SpanCount(), "the ingress span left alone")
	h.send(ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34})
	h.advance(2 * time.Second)
	first := find(t, h.out(), "2222222222222222", C)
	assert.Equal(t, pad(traceA), first.traceID, "the first orphan of pp joins")
	assert.Equal(t, "1111111111111111", first.parentID)
	assert.Equal(t, map[string]int64{"connected": 1}, h.outcomes(), "the late fragment joins a trace already counted")
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_late_spans"))

	h.send(ts{trace: traceC, id: "3333333333333333", kind: S, service: pp, node: pp1, rid: ridOther, start: 100, end: 140})
	h.advance(2 * time.Second)
	h.send(ts{trace: traceD, id: "4444444444444444", kind: C, service: pp, node: pp1, rid: ridOther, start: 103, end: 134})
	h.advance(2 * time.Second)
	second := find(t, h.out(), "4444444444444444", C)
	assert.Equal(t, pad(traceC), second.traceID, "and so does the next")
	assert.Equal(t, "3333333333333333", second.parentID)
	h.shutdown()
}

// TestLateChildOfAmbiguousReleasedParent: a span ID released in two
// different traces cannot be a late child's parent; released twice in one
// trace (a Zipkin shared client/server pair) it can. Found by FuzzStitch:
// the index used to keep whichever release came last.
func TestLateChildOfAmbiguousReleasedParent(t *testing.T) {
	h := newHarness(t, nil)
	h.send(
		ts{trace: traceA, id: "1111111111111111", kind: S, service: pp},
		ts{trace: traceB, id: "1111111111111111", kind: S, service: rv},
		ts{trace: traceD, id: "3333333333333333", kind: C, service: pp},
		ts{trace: traceD, id: "3333333333333333", parent: "3333333333333330", kind: S, service: rv},
	)
	h.advance(2 * time.Second)
	h.send(
		ts{trace: traceC, id: "2222222222222222", parent: "1111111111111111", kind: I, service: rt},
		ts{trace: "e1e2e3e4e5e6e7e8", id: "4444444444444444", parent: "3333333333333333", kind: I, service: rt},
	)
	h.advance(2 * time.Second)
	out := h.out()
	left := find(t, out, "2222222222222222", I)
	assert.Equal(t, pad(traceC), left.traceID, "two candidate parents in different traces: left where it was")
	assert.Nil(t, left.attrs[stitchedByAttribute])
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_ambiguous"))
	joined := find(t, out, "4444444444444444", I)
	assert.Equal(t, pad(traceD), joined.traceID, "a shared pair is one parent")
	assert.Equal(t, "parent_id", joined.attrs[stitchedByAttribute])
	h.shutdown()
}

func TestLateFragmentAfterTTLStaysDisconnected(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LateSpanTTL = 5 * time.Second })
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40})
	h.advance(2 * time.Second)
	h.advance(6 * time.Second)
	h.send(ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34})
	h.advance(2 * time.Second)
	assert.Equal(t, pad(traceB), find(t, h.out(), "2222222222222222", C).traceID)
	assert.Zero(t, h.counter("processor_tracestitch_late_spans"))
	assert.Equal(t, map[string]int64{"connected": 1, "disconnected": 1}, h.outcomes())
	h.shutdown()
}

func TestLinkModeKeepsTraceIDs(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StitchMode = StitchModeLink })
	h.send(
		ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40},
		ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34},
		ts{trace: traceB, id: "2222222222222222", kind: S, service: rv, node: rv1, rid: rid, start: 4, end: 33},
	)
	h.advance(2 * time.Second)
	out := h.out()
	c := find(t, out, "2222222222222222", C)
	assert.Equal(t, pad(traceB), c.traceID)
	assert.Empty(t, c.parentID)
	assert.Equal(t, []string{pad(traceA) + "/1111111111111111"}, c.links)
	assert.Equal(t, "request_id", c.attrs[stitchedByAttribute])
	assert.NotContains(t, c.attrs, "tracestitch.original_trace_id")
	assert.Equal(t, map[string]int64{"stitched": 1}, h.outcomes())
	h.shutdown()
}

func TestInvalidRequestIDsAreCountedAndIgnored(t *testing.T) {
	h := newHarness(t, nil)
	long := strings.Repeat("a", maxRequestIDLen+1)
	h.send(
		ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40},
		ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, start: 3, end: 34,
			attrs: map[string]any{"guid:x-request-id": 42, "x-request-id": rid}}, // first key unusable, next one used
		ts{trace: traceC, id: "3333333333333333", kind: C, service: pp, node: pp1, start: 3, end: 34,
			attrs: map[string]any{"guid:x-request-id": ""}},
		ts{trace: traceD, id: "4444444444444444", kind: C, service: pp, node: pp1, start: 3, end: 34,
			attrs: map[string]any{"guid:x-request-id": long}},
		ts{trace: "e1e2e3e4e5e6e7e8", id: "5555555555555555", kind: C, service: pp, node: pp1, start: 3, end: 34,
			attrs: map[string]any{"http.request.header.x-request-id": []any{1, 2}}},
	)
	h.advance(2 * time.Second)
	assert.Equal(t, int64(4), h.counter("processor_tracestitch_request_id_invalid"))
	out := h.out()
	assert.Equal(t, "1111111111111111", find(t, out, "2222222222222222", C).parentID)
	for _, id := range []string{"3333333333333333", "4444444444444444", "5555555555555555"} {
		assert.Empty(t, find(t, out, id, C).parentID)
	}
	assert.Equal(t, map[string]int64{"stitched": 1, "disconnected": 3}, h.outcomes())
	h.shutdown()
}

func TestDownstreamErrorIsCounted(t *testing.T) {
	h := newHarness(t, nil)
	h.p.next = consumertest.NewErr(errors.New("backend down"))
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp}, ts{trace: traceB, id: "2222222222222222", kind: S, service: pp})
	h.advance(2 * time.Second)
	assert.Equal(t, int64(2), h.counter("processor_tracestitch_spans_dropped", attribute.String("reason", "downstream_error")))
	assert.Zero(t, h.counter("processor_tracestitch_spans_released"))
	require.NoError(t, h.p.Shutdown(context.Background()))
}

// truth is the expected result of a shared sample.
type truth struct {
	TraceID string            `json:"trace_id"`
	Parents map[string]string `json:"parents"`
}

func TestSharedSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "samples", "*.zipkin.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".zipkin.json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "samples", name+".truth.json"))
			require.NoError(t, err)
			var want truth
			require.NoError(t, json.Unmarshal(b, &want))
			h := newHarness(t, nil)
			h.sendTraces(loadZipkin(t, name+".zipkin.json"))
			h.shutdown()
			out := h.out()
			require.Len(t, out, len(want.Parents))
			for node, parent := range want.Parents {
				id, kind := splitNode(t, node)
				s := find(t, out, id, kind)
				assert.Equal(t, pad(want.TraceID), s.traceID, node)
				if pid, _, ok := strings.Cut(parent, "/"); ok || parent != "" {
					if !ok {
						pid = parent
					}
					// "X/CLIENT" as parent of a shared-ID SERVER span means the
					// Zipkin shared pair: same span ID, no parent field rewrite.
					if strings.HasSuffix(parent, "/CLIENT") {
						assert.Equal(t, pid, s.spanID, node)
						continue
					}
					assert.Equal(t, pid, s.parentID, node)
				} else {
					assert.Empty(t, s.parentID, node)
				}
			}
		})
	}
}

func splitNode(t *testing.T, node string) (string, ptrace.SpanKind) {
	id, kind, ok := strings.Cut(node, "/")
	require.True(t, ok, node)
	switch kind {
	case "SERVER":
		return id, ptrace.SpanKindServer
	case "CLIENT":
		return id, ptrace.SpanKindClient
	}
	require.Failf(t, "unknown kind", node)
	return "", 0
}

// TestConcurrentConsumeAndShutdown runs the real ticker with many writers
// and shuts down while they are releasing: nothing is lost or duplicated.
func TestConcurrentConsumeAndShutdown(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.WaitDuration = 20 * time.Millisecond
	cfg.MaxWait = 100 * time.Millisecond
	cfg.MaxBufferedSpans = 500
	sink := &countingSink{seen: map[string]int{}}
	tel := componenttest.NewTelemetry()
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
	p, err := NewFactory().CreateTraces(context.Background(), metadatatest.NewSettings(tel), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
	const writers, perWriter = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				n := w*perWriter + i
				tr := fmt.Sprintf("%032x", n/3+1) // three spans per trace, spread over writers
				td := build(t, ts{trace: tr, id: fmt.Sprintf("%016x", n+1), kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 10})
				assert.NoError(t, p.ConsumeTraces(context.Background(), td))
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, p.Shutdown(context.Background()))
	sink.mu.Lock()
	defer sink.mu.Unlock()
	assert.Len(t, sink.seen, writers*perWriter, "every span left")
	for id, n := range sink.seen {
		assert.Equal(t, 1, n, "span %s left more than once", id)
	}
}

type countingSink struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *countingSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *countingSink) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range flatten(td) {
		s.seen[o.spanID+"/"+o.kind.String()]++
	}
	return nil
}

func TestLifecycleTwiceAndWithoutStart(t *testing.T) {
	f := NewFactory()
	set := processortest.NewNopSettings(metadata.Type)
	p, err := f.CreateTraces(context.Background(), set, f.CreateDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(context.Background()), "shutdown without start")

	p, err = f.CreateTraces(context.Background(), set, f.CreateDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, p.Shutdown(context.Background()))
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestVerifyShutdown(t *testing.T) {
	processortest.VerifyShutdown(t, NewFactory(), NewFactory().CreateDefaultConfig())
}

// sharedSourceBatch is one batch with spans of traces A and B under two
// resources and, in the first, two scopes (a Zipkin or OTLP receiver's
// batch of many traces looks like this).
func sharedSourceBatch(t *testing.T) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://example.com/rs")
	rs.Resource().Attributes().PutStr("service.name", pp)
	rs.Resource().Attributes().PutStr("k8s.pod.name", "productpage-v1-7d9c")
	addSpans := func(ss ptrace.ScopeSpans, name string, spans ...[2]string) {
		ss.Scope().SetName(name)
		ss.Scope().SetVersion("1.0")
		ss.Scope().Attributes().PutStr("scope.attr", name)
		ss.SetSchemaUrl("https://example.com/" + name)
		for _, s := range spans {
			span := ss.Spans().AppendEmpty()
			span.SetTraceID(traceID(t, s[0]))
			span.SetSpanID(spanID(t, s[1]))
			span.SetKind(I)
		}
	}
	addSpans(rs.ScopeSpans().AppendEmpty(), "s1", [2]string{traceA, "0000000000000001"}, [2]string{traceB, "0000000000000002"}, [2]string{traceA, "0000000000000003"})
	addSpans(rs.ScopeSpans().AppendEmpty(), "s2", [2]string{traceB, "0000000000000004"})
	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("service.name", rv)
	addSpans(rs2.ScopeSpans().AppendEmpty(), "s3", [2]string{traceA, "0000000000000005"})
	return td
}

// layout renders a released trace's resources, scopes and span IDs.
func layout(td ptrace.Traces) []string {
	var out []string
	for _, rs := range td.ResourceSpans().All() {
		line := fmt.Sprintf("%v %s:", rs.Resource().Attributes().AsRaw(), rs.SchemaUrl())
		for _, ss := range rs.ScopeSpans().All() {
			line += fmt.Sprintf(" [%s %s %v %s:", ss.Scope().Name(), ss.Scope().Version(), ss.Scope().Attributes().AsRaw(), ss.SchemaUrl())
			for _, span := range ss.Spans().All() {
				line += " " + span.SpanID().String()[15:]
			}
			line += "]"
		}
		out = append(out, line)
	}
	return out
}

// TestSourcesSharedUntilRelease: a batch's resources and scopes are taken
// out of it once and shared by the buffered spans of all its traces (no
// per-trace copies while buffered); a release hands on its traces in one
// batch with one copy of each resource and scope their spans arrived under,
// spans in arrival order, trace by trace.
func TestSourcesSharedUntilRelease(t *testing.T) {
	h := newHarness(t, nil)
	td := sharedSourceBatch(t)
	sp := &batchSplit{byTrace: map[pcommon.TraceID]int32{}}
	sp.split(td, &h.p.buf.reader, h.p.buf.names)
	require.Len(t, sp.frags, 2)
	a, b := sp.frags[0].parts, sp.frags[1].parts
	require.Len(t, a, 2, "trace A: scope s1, then the second resource's scope")
	require.Len(t, b, 2, "trace B: scopes s1 and s2")
	assert.Same(t, a[0].src, b[0].src, "both traces' spans of scope s1 share it")
	assert.Same(t, b[0].src.res, b[1].src.res, "both scopes of a resource share it")
	assert.NotSame(t, a[0].src.res, a[1].src.res)
	assert.Zero(t, td.ResourceSpans().At(0).Resource().Attributes().Len(), "moved out of the batch, not copied")
	assert.Equal(t, 2, a[0].spans.Len())

	h.sendTraces(sharedSourceBatch(t))
	h.advance(2 * time.Second)
	require.Len(t, h.sink.AllTraces(), 1, "one release, one call downstream")
	ppRes := "map[k8s.pod.name:productpage-v1-7d9c service.name:" + pp + "] https://example.com/rs:"
	assert.Equal(t, []string{
		ppRes + " [s1 1.0 map[scope.attr:s1] https://example.com/s1: 1 3 2] [s2 1.0 map[scope.attr:s2] https://example.com/s2: 4]",
		"map[service.name:" + rv + "] : [s3 1.0 map[scope.attr:s3] https://example.com/s3: 5]",
	}, layout(h.sink.AllTraces()[0]))
	h.shutdown()
}

// TestRepeatedSourcesAreShared: a batch that carries one span per
// ResourceSpans (a batch processor concatenating small payloads) shares
// each distinct resource and scope among the spans that arrived under an
// equal one, and hands them on as if they had arrived together.
func TestRepeatedSourcesAreShared(t *testing.T) {
	batch := func() ptrace.Traces {
		td := ptrace.NewTraces()
		for i, res := range []string{"a", "a", "b", "a", "a"} {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", res)
			rs.Resource().Attributes().PutStr("k8s.pod.name", res+"-1")
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("envoy")
			if i == 4 {
				ss.Scope().SetVersion("2") // another scope of resource a
			}
			span := ss.Spans().AppendEmpty()
			span.SetTraceID(pcommon.TraceID{15: 1})
			span.SetSpanID(pcommon.SpanID{7: byte(i + 1)})
		}
		return td
	}
	h := newHarness(t, nil)
	sp := &batchSplit{byTrace: map[pcommon.TraceID]int32{}}
	sp.split(batch(), &h.p.buf.reader, h.p.buf.names)
	require.Len(t, sp.frags, 1)
	parts := sp.frags[0].parts
	require.Len(t, parts, 4, "a (spans 1, 2), b (3), a (4), a with scope version 2 (5)")
	assert.Equal(t, 2, parts[0].spans.Len())
	assert.Same(t, parts[0].src, parts[2].src, "resource a and its scope, shared")
	assert.Same(t, parts[0].src.res, parts[3].src.res, "resource a under another scope")
	assert.NotSame(t, parts[0].src, parts[3].src)
	assert.NotSame(t, parts[0].src.res, parts[1].src.res)

	h.sendTraces(batch())
	h.advance(2 * time.Second)
	require.Len(t, h.sink.AllTraces(), 1)
	assert.Equal(t, []string{
		"map[k8s.pod.name:a-1 service.name:a] : [envoy  map[] : 1 2 4] [envoy 2 map[] : 5]",
		"map[k8s.pod.name:b-1 service.name:b] : [envoy  map[] : 3]",
	}, layout(h.sink.AllTraces()[0]))
	h.shutdown()
}

// TestReleaseBatchesHoldWholeTraces: a release is handed on in as few
// calls as release_batch_max_spans allows; a trace is never split between
// calls, and a trace bigger than the cap goes alone.
func TestReleaseBatchesHoldWholeTraces(t *testing.T) {
	const limit = 1000
	sizes := []int{300, 300, 300, limit + 10, 1, 200, 200}
	for name, tc := range map[string]struct {
		limit    int
		maxCalls int
	}{
		"cap above the release, one call": {3000, 1},
		"capped":                          {limit, len(sizes) - 1},
		"one trace per call":              {1, len(sizes)},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.ReleaseBatchMaxSpans = tc.limit })
			td := ptrace.NewTraces()
			ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
			for tr, n := range sizes {
				for i := range n {
					span := ss.Spans().AppendEmpty()
					span.SetTraceID(pcommon.TraceID{15: byte(tr + 1)})
					span.SetSpanID(pcommon.SpanID{0: byte(tr + 1), 6: byte(i >> 8), 7: byte(i)})
				}
			}
			h.sendTraces(td)
			h.advance(2 * time.Second)
			calls := map[pcommon.TraceID]int{}
			var perCall, firstTrace []int
			for _, out := range h.sink.AllTraces() {
				perCall = append(perCall, out.SpanCount())
				// one source: units follow each other in the call's one scope
				firstTrace = append(firstTrace, int(out.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID()[15]))
				seen := map[pcommon.TraceID]int{}
				pdatautil.EachSpan(out, func(s ptrace.Span) { seen[s.TraceID()]++ })
				for id, n := range seen {
					calls[id]++
					assert.Equal(t, sizes[id[15]-1], n, "trace %d leaves whole", id[15])
				}
				if len(seen) > 1 {
					assert.LessOrEqual(t, out.SpanCount(), tc.limit, "only a lone trace may exceed the cap")
				}
			}
			for tr := range sizes {
				assert.Equal(t, 1, calls[pcommon.TraceID{15: byte(tr + 1)}], "trace %d in one call", tr+1)
			}
			for i := 1; i < len(perCall); i++ {
				assert.Greater(t, perCall[i-1]+sizes[firstTrace[i]-1], tc.limit,
					"a call ends only when the next trace does not fit: %v", perCall)
			}
			assert.LessOrEqual(t, len(perCall), tc.maxCalls, "calls: %v", perCall)
			h.shutdown()
		})
	}
}

// TestOutcomesExistFromStart: each outcome is reported at 0 once the
// processor starts, so that a share computed from them has data before the
// first trace of each kind.
func TestOutcomesExistFromStart(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.tel.GetMetric("otelcol_processor_tracestitch_traces")
	require.Error(t, err, "nothing is reported before Start")
	require.NoError(t, h.p.Start(context.Background(), componenttest.NewNopHost()))
	m, err := h.tel.GetMetric("otelcol_processor_tracestitch_traces")
	require.NoError(t, err)
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok)
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		v, _ := dp.Attributes.Value("outcome")
		got[v.AsString()] = dp.Value
	}
	assert.Equal(t, map[string]int64{"connected": 0, "stitched": 0, "disconnected": 0}, got)
	h.shutdown()
}

func TestMetricsNameTheirProcessor(t *testing.T) {
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	for _, name := range []string{"key", "stitch"} {
		cfg := createDefaultConfig().(*Config)
		if name == "key" {
			cfg.Mode = ModeKey
		}
		set := metadatatest.NewSettings(tel)
		set.ID = component.NewIDWithName(metadata.Type, name)
		p, err := newProcessor(set, cfg, new(consumertest.TracesSink))
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
		td := ptrace.NewTraces()
		td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty().SetTraceID(pcommon.TraceID{1})
		require.NoError(t, p.ConsumeTraces(context.Background(), td))
		require.NoError(t, p.Shutdown(context.Background()))
	}
	metadatatest.AssertEqualProcessorTracestitchSpansReleased(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch/key"))},
		{Value: 1, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch/stitch"))},
	}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualProcessorTracestitchTraces(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch/stitch"), attribute.String("outcome", "connected"))},
		{Value: 0, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch/stitch"), attribute.String("outcome", "stitched"))},
		{Value: 0, Attributes: attribute.NewSet(attribute.String("processor", "tracestitch/stitch"), attribute.String("outcome", "disconnected"))},
	}, metricdatatest.IgnoreTimestamp())
}
