package tracestitch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"

	"github.com/tracestitch/tracestitch/meshsim"
)

// assertConserved: every span that entered left, or was counted as dropped
// with a reason, and nothing is still buffered.
func (h *harness) assertConserved() {
	h.t.Helper()
	dropped := h.counter("processor_tracestitch_spans_dropped")
	released := h.counter("processor_tracestitch_spans_released")
	assert.Equal(h.t, int64(h.in), h.counter("processor_tracestitch_spans_received"), "received")
	assert.Equal(h.t, int64(h.in), released+dropped, "spans in == spans released + spans dropped")
	assert.Equal(h.t, int64(h.sink.SpanCount()), released, "released spans reached the next consumer")
	assert.Zero(h.t, h.counter("processor_tracestitch_spans_buffered"), "nothing left in the buffer")
}

// scriptedSink fails or blocks as told, and otherwise keeps what it gets.
type scriptedSink struct {
	mu      sync.Mutex
	err     error
	block   chan struct{}
	entered chan struct{}
	spans   int
}

func (s *scriptedSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *scriptedSink) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if s.block != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.block // ignores ctx on purpose: the worst kind of consumer
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.spans += td.SpanCount()
	return nil
}

func TestDownstreamErrorsAreCountedByKind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		reason string
	}{
		{"retryable", errors.New("connection refused"), "downstream_error"},
		{"permanent", consumererror.NewPermanent(errors.New("bad data")), "downstream_permanent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.p.next = &scriptedSink{err: tc.err}
			h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp}, ts{trace: traceB, id: "2222222222222222", kind: S, service: pp})
			h.advance(2 * time.Second)
			h.send(ts{trace: traceC, id: "3333333333333333", kind: S, service: pp})
			require.NoError(t, h.p.Shutdown(context.Background()))
			assert.Equal(t, int64(3), h.counter("processor_tracestitch_spans_dropped", attribute.String("reason", tc.reason)))
			h.assertConserved()
		})
	}
}

func TestShutdownWithBlockedConsumerHonoursContext(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReleaseBatchMaxSpans = 1 }) // a call per trace
	sink := &scriptedSink{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	h.p.next = sink
	h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp})
	h.send(ts{trace: traceB, id: "2222222222222222", kind: S, service: pp})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.p.Shutdown(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second, "Shutdown returned when its context ended")
	<-sink.entered
	close(sink.block) // the consumer finally returns: the first trace lands, the rest was counted
	require.Eventually(t, func() bool {
		return h.counter("processor_tracestitch_spans_released")+h.counter("processor_tracestitch_spans_dropped") == int64(h.in)
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_spans_dropped", attribute.String("reason", "shutdown_timeout")))
	assert.Equal(t, int64(1), h.counter("processor_tracestitch_spans_released"))
}

// TestSlowConsumerBackpressure: with a consumer slower than the input the
// buffer stays within its bound; callers carry evictions and wait, nothing
// deadlocks and nothing is lost.
func TestSlowConsumerBackpressure(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBufferedSpans = 50 })
	slow := &slowSink{delay: time.Millisecond}
	h.p.next = slow
	var wg sync.WaitGroup
	var inMu sync.Mutex
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				td := build(t, ts{trace: fmt.Sprintf("%032x", w*1000+i+1), id: fmt.Sprintf("%016x", w*1000+i+1), kind: S, service: pp})
				inMu.Lock()
				h.in++
				inMu.Unlock()
				assert.NoError(t, h.p.ConsumeTraces(context.Background(), td))
				// between adds and releases (an add over the bound evicts
				// under the exclusive lock before letting it go)
				assert.LessOrEqual(t, h.p.buf.bufferedSpans(), int64(50), "buffer bound holds")
			}
		}()
	}
	wg.Wait()
	require.NoError(t, h.p.Shutdown(context.Background()))
	assert.Equal(t, 400, slow.count())
	assert.Equal(t, int64(350), h.counter("processor_tracestitch_traces_evicted"))
}

// liveHeap is the live heap after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

type slowSink struct {
	mu    sync.Mutex
	delay time.Duration
	n     int
}

func (s *slowSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }
func (s *slowSink) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	time.Sleep(s.delay)
	s.mu.Lock()
	s.n += td.SpanCount()
	s.mu.Unlock()
	return nil
}
func (s *slowSink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

func TestMalformedInput(t *testing.T) {
	many := func(n int, f func(i int) ts) []ts {
		out := make([]ts, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	cases := []struct {
		name  string
		spans []ts
		td    func() ptrace.Traces
	}{
		{name: "empty trace and span IDs", td: func() ptrace.Traces {
			td := ptrace.NewTraces()
			ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
			ss.Spans().AppendEmpty().SetName("no ids at all")
			sp := ss.Spans().AppendEmpty()
			sp.SetParentSpanID(pcommon.SpanID{1})
			return td
		}},
		{name: "duplicate span IDs that are not a shared pair", spans: []ts{
			{trace: traceA, id: "1111111111111111", kind: S, service: pp},
			{trace: traceA, id: "1111111111111111", kind: S, service: pp},
			{trace: traceA, id: "2222222222222222", parent: "1111111111111111", kind: C, service: pp},
			{trace: traceB, id: "1111111111111111", kind: C, service: pp},
			{trace: traceC, id: "3333333333333333", parent: "1111111111111111", kind: S, service: rv},
		}},
		{name: "self-parent", spans: []ts{{trace: traceA, id: "1111111111111111", parent: "1111111111111111", kind: C, service: pp, rid: rid, node: pp1}}},
		{name: "parent cycle across fragments by parent ID", spans: []ts{
			{trace: traceA, id: "1111111111111111", parent: "2222222222222222", kind: I, service: pp},
			{trace: traceB, id: "2222222222222222", parent: "3333333333333333", kind: I, service: pp},
			{trace: traceC, id: "3333333333333333", parent: "1111111111111111", kind: I, service: pp},
		}},
		{name: "request-ID cycle A->B->A", spans: []ts{
			{trace: traceA, id: "1111111111111111", kind: C, start: 10, end: 20, service: pp, node: pp1, rid: rid},
			{trace: traceA, id: "1111111111111112", parent: "1111111111111111", kind: S, start: 0, end: 30, service: pp, node: pp1, rid: rid},
			{trace: traceB, id: "2222222222222222", kind: C, start: 5, end: 25, service: pp, node: pp1, rid: rid},
			{trace: traceB, id: "2222222222222223", parent: "2222222222222222", kind: S, start: 5, end: 25, service: pp, node: pp1, rid: rid},
		}},
		{name: "64/128-bit mix with the same low bits and no parent link", spans: []ts{
			{trace: traceA, id: "1111111111111111", kind: S, service: pp},
			{trace: trace128, id: "2222222222222222", kind: S, service: pp},
		}},
		{name: "end before start and zero timestamps", spans: []ts{
			{trace: traceA, id: "1111111111111111", kind: S, start: 50, end: 10, service: pp, node: pp1, rid: rid},
			{trace: traceB, id: "2222222222222222", kind: C, start: 20, end: 30, service: pp, node: pp1, rid: rid},
		}, td: func() ptrace.Traces {
			td := ptrace.NewTraces()
			sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{9})
			sp.SetSpanID(pcommon.SpanID{9})
			sp.SetKind(ptrace.SpanKindClient)
			sp.Attributes().PutStr("guid:x-request-id", rid)
			return td
		}},
		{name: "odd attribute types", spans: []ts{
			{trace: traceA, id: "1111111111111111", kind: S, service: pp, attrs: map[string]any{
				"guid:x-request-id": map[string]any{"a": 1}, "node_id": 42, "http.request.header.x-request-id": []any{},
			}},
			{trace: traceB, id: "2222222222222222", kind: C, service: pp, attrs: map[string]any{
				"guid:x-request-id": []any{rid, rid}, "node_id": []any{"x"}, "x-request-id": 3.5,
			}},
		}},
		{name: "huge request ID", spans: []ts{{trace: traceA, id: "1111111111111111", kind: C, service: pp, rid: strings.Repeat("x", 1<<20)}}},
		{name: "thousands of fragments sharing one request ID", spans: many(3000, func(i int) ts {
			k := C
			if i%2 == 0 {
				k = S
			}
			return ts{trace: fmt.Sprintf("%032x", i+1), id: fmt.Sprintf("%016x", i+1), kind: k, start: int64(i % 7), end: int64(100 - i%5), service: pp, node: pp1, rid: rid}
		})},
		{name: "one trace with 100k spans", spans: many(100_000, func(i int) ts {
			parent := ""
			if i > 0 {
				parent = fmt.Sprintf("%016x", i/2+1)
			}
			return ts{trace: traceA, id: fmt.Sprintf("%016x", i+1), parent: parent, kind: I, service: pp}
		})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MaxBufferedSpans = 200_000 })
			done := make(chan struct{})
			go func() {
				defer close(done)
				if tc.spans != nil {
					h.sendTraces(build(t, tc.spans...))
				}
				if tc.td != nil {
					h.sendTraces(tc.td())
				}
				h.advance(2 * time.Second)
				require.NoError(t, h.p.Shutdown(context.Background()))
			}()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("did not finish: a loop on malformed input")
			}
			h.assertConserved()
			assert.Zero(t, h.counter("processor_tracestitch_spans_dropped"))
		})
	}
}

// TestFloodStaysBounded sends 10x max_buffered_spans faster than
// wait_duration: early releases are counted, no span is lost, and the heap
// held afterwards is bounded by the buffer and index sizes, not the volume.
func TestFloodStaysBounded(t *testing.T) {
	const maxSpans, perTrace, total = 5_000, 10, 50_000
	h := newHarness(t, func(c *Config) {
		c.MaxBufferedSpans = maxSpans
		c.MaxIndexEntries = 10_000
	})
	// a sink that keeps nothing, so the heap shows what the processor holds
	nop := &slowSink{}
	h.p.next = nop
	before := liveHeap()
	peak := 0
	for i := 0; i < total/perTrace; i++ {
		spans := make([]ts, perTrace)
		for j := range spans {
			n := i*perTrace + j + 1
			spans[j] = ts{trace: fmt.Sprintf("%032x", i+1), id: fmt.Sprintf("%016x", n), kind: S, service: pp, node: pp1, rid: fmt.Sprintf("%036d", i)}
		}
		h.send(spans...)
		peak = max(peak, int(h.p.buf.spans.Load()))
		h.clock.Add(time.Microsecond) // far faster than wait_duration
	}
	assert.LessOrEqual(t, peak, maxSpans)
	assert.Equal(t, int64(total/perTrace-maxSpans/perTrace), h.counter("processor_tracestitch_traces_evicted"))
	assert.LessOrEqual(t, h.p.stage.released.len(), 10_000, "released index bounded by max_index_entries")

	held := int64(liveHeap()) - int64(before)
	buffered, indexed := int(h.p.buf.spans.Load()), h.p.stage.released.len()
	t.Logf("heap held: %d bytes with %d buffered spans and %d index entries", held, buffered, indexed)
	// Documented bound (README, Reliability): 2 KiB per buffered span of
	// this shape plus 512 B per index entry.
	assert.Less(t, held, int64(2048*buffered+512*indexed))
	require.NoError(t, h.p.Shutdown(context.Background()))
	assert.Equal(t, total, nop.count())
	assert.Equal(t, int64(total), h.counter("processor_tracestitch_spans_released"))
	runtime.KeepAlive(h)
}

// TestWritersTickerAndEvictionsInterleave: concurrent writers, the ticker's
// releases and the writers' evictions all take units out of the buffer and
// stitch them in turn (run it with -race). Each child span arrives one batch
// after its parent, in a trace of its own: whether the parent is still
// buffered, taken out by the ticker or evicted (then the child is a late
// span), the child must end up in the parent's trace, nothing deadlocks, and
// every span leaves exactly once. TestReleasesStitchInTurn checks the order
// of the turns itself, which timing here rarely puts to the test.
func TestWritersTickerAndEvictionsInterleave(t *testing.T) {
	const writers, perWriter = 4, 150
	h := newHarness(t, func(c *Config) {
		c.WaitDuration = 10 * time.Millisecond
		c.MaxWait = 100 * time.Millisecond
		c.MaxBufferedSpans = 40
	})
	h.p.now = time.Now // the ticker releases on the real clock
	require.NoError(t, h.p.Start(context.Background(), nil))
	parentTrace := func(n int) string { return fmt.Sprintf("%032x", n) }
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; i <= perWriter; i++ {
				n := w*10_000 + i + 1
				var spans []ts
				if i < perWriter {
					spans = append(spans, ts{trace: parentTrace(n), id: fmt.Sprintf("%016x", n), kind: S, service: pp})
				}
				if i > 0 { // the child of the previous batch's parent
					spans = append(spans, ts{trace: fmt.Sprintf("%032x", n-1+1_000_000), id: fmt.Sprintf("%016x", n-1+1_000_000),
						parent: fmt.Sprintf("%016x", n-1), kind: C, service: pp})
				}
				assert.NoError(t, h.p.ConsumeTraces(context.Background(), build(t, spans...)))
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // let the ticker release now and then
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, h.p.Shutdown(context.Background()))
	h.in = 2 * writers * perWriter
	h.assertConserved()
	assert.Zero(t, h.counter("processor_tracestitch_spans_dropped"))
	assert.Positive(t, h.counter("processor_tracestitch_traces_evicted"), "evictions happened")
	t.Logf("evicted %d traces, %d late spans", h.counter("processor_tracestitch_traces_evicted"), h.counter("processor_tracestitch_late_spans"))
	out := h.out()
	require.Len(t, out, 2*writers*perWriter)
	for w := range writers {
		for i := 0; i < perWriter; i++ {
			n := w*10_000 + i + 1
			child := find(t, out, fmt.Sprintf("%016x", n+1_000_000), C)
			assert.Equal(t, parentTrace(n), child.traceID, "child %d joined its parent's trace", n)
		}
	}
}

// TestConcurrentCallersStitchAsOne: batches added by concurrent callers
// (the buffer's shards locked by each add separately) stitch exactly as
// the same batches added one after the other. The simulator's traffic goes
// in one-second windows; within a window the clock stands still and the
// window's batches are sent by 4 goroutines at once, or by one.
func TestConcurrentCallersStitchAsOne(t *testing.T) {
	topo, err := meshsim.LoadTopology("")
	require.NoError(t, err)
	opts := meshsim.DefaultOptions()
	opts.Concurrency = 32
	opts.RetryRate = 0.1
	res := meshsim.Run(topo, opts)
	batches := meshsim.Batches(res.Spans, 20*time.Millisecond)

	run := func(callers int) (meshsim.Report, map[string]int64, int64) {
		h := newHarness(t, func(c *Config) {
			c.WaitDuration = 2 * time.Second
			c.MaxWait = 30 * time.Second
		})
		h.clock.now = res.Spans[0].Arrival
		var mu sync.Mutex
		for start := 0; start < len(batches); {
			windowEnd := batches[start][0].Arrival.Add(time.Second)
			end := start
			for end < len(batches) && batches[end][0].Arrival.Before(windowEnd) {
				end++
			}
			tds := make(chan ptrace.Traces, end-start)
			for _, batch := range batches[start:end] {
				td, err := meshsim.Traces(batch)
				require.NoError(t, err)
				h.in += td.SpanCount()
				tds <- td
			}
			close(tds)
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for td := range tds {
						err := h.p.ConsumeTraces(context.Background(), td)
						mu.Lock()
						assert.NoError(t, err)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			h.advance(windowEnd.Sub(h.clock.Now()))
			start = end
		}
		for range 40 {
			h.advance(100 * time.Millisecond)
		}
		h.shutdown()
		report := meshsim.Evaluate(res.Spans, meshsim.FromTraces(h.sink.AllTraces()...))
		report.Examples = nil
		return report, h.outcomes(), h.counter("processor_tracestitch_stitches")
	}
	oneReport, oneOutcomes, oneStitches := run(1)
	require.Positive(t, oneStitches, "the traffic has fragments to stitch")
	require.Zero(t, oneReport.WrongEdges)
	for range 3 {
		report, outcomes, stitches := run(4)
		assert.Equal(t, oneReport, report)
		assert.Equal(t, oneOutcomes, outcomes)
		assert.Equal(t, oneStitches, stitches)
	}
}
