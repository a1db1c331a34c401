package bench

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"testing"
	"time"

	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
)

// BenchmarkRound runs the same rounds as `make bench` as Go benchmarks:
// go test -run '^$' -bench . ./bench
func BenchmarkRound(b *testing.B) {
	for _, shape := range []Shape{Spans10, Spans100} {
		in := Generate(shape, 20_000)
		for _, s := range Subjects {
			b.Run(fmt.Sprintf("%s/%s", s, shape), func(b *testing.B) {
				var spans, cpu int64
				for i := 0; i < b.N; i++ {
					r, err := RunRound(s, in)
					if err != nil {
						b.Fatal(err)
					}
					spans += int64(r.Spans)
					cpu += r.CPU.Nanoseconds()
				}
				b.ReportMetric(float64(cpu)/float64(spans), "cpu-ns/span")
			})
		}
	}
}

// TestRoundsDeliverEverything keeps the harness honest: every subject
// releases every span it was given.
func TestRoundsDeliverEverything(t *testing.T) {
	in := Generate(Spans10, 2_000)
	for _, s := range Subjects {
		r, err := RunRound(s, in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Lost != 0 && s != Groupbytrace {
			t.Fatalf("%s lost %d of %d spans", s, r.Lost, in.Spans)
		}
	}
	if r, err := FlushRound(Tracestitch, in); err != nil || r.Lost != 0 {
		t.Fatal(err, r.Lost)
	}
	if r, err := ParallelRound(Tracestitch, in, 2); err != nil || r.Lost != 0 {
		t.Fatal(err, r.Lost)
	}
}

// TestRewriteFloorStitchesAsTracestitch: the rewrite floor's output is the
// stitched output (every span in the trace tracestitch puts it in, with
// the same original trace ID kept), so it is an anchor for the cost of
// producing that output.
func TestRewriteFloorStitchesAsTracestitch(t *testing.T) {
	for _, shape := range Shapes {
		in := Generate(shape, 5_000)
		ts, moved := outputOf(t, Tracestitch, in)
		rf, movedRF := outputOf(t, RewriteFloor, in)
		if (moved == 0) != (shape == SingleSpan) || moved != movedRF {
			t.Fatalf("%s: tracestitch moved %d spans, the rewrite floor %d", shape, moved, movedRF)
		}
		if len(ts) != in.Spans || len(rf) != in.Spans {
			t.Fatalf("%s: %d and %d of %d spans came out", shape, len(ts), len(rf), in.Spans)
		}
		for id, want := range ts {
			if got := rf[id]; got != want {
				t.Fatalf("%s: span %v: rewrite floor %+v, tracestitch %+v", shape, id, got, want)
			}
		}
	}
}

// TestIndexFloorKeepsEverySpanFindable: the index floor is the rewrite
// floor (same output) that also has every buffered span in its live index
// and in its log with the trace it leaves in: the bookkeeping it is a lower
// bound for.
func TestIndexFloorKeepsEverySpanFindable(t *testing.T) {
	in := Generate(Spans10, 5_000)
	sink := new(consumertest.TracesSink)
	p, tel, err := create(IndexFloor, in, time.Hour, 4*in.Spans, sink)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background()) //nolint:errcheck
	ids := map[pcommon.SpanID]bool{}
	for _, td := range in.Clone() {
		pdatautil.EachSpan(td, func(sp ptrace.Span) { ids[sp.SpanID()] = true })
		if err := p.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	f := p.(*floor)
	if len(f.live) != len(ids) || len(f.log) != in.Spans {
		t.Fatalf("live index holds %d span IDs and the log %d spans; the input has %d and %d", len(f.live), len(f.log), len(ids), in.Spans)
	}
	leaves := map[pcommon.SpanID]pcommon.TraceID{}
	for id, at := range f.live {
		l := f.log[at]
		if l.span != id {
			t.Fatalf("live index: span %v at %d, the log has %v there", id, at, l.span)
		}
		leaves[id] = l.trace
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.live) != 0 || len(f.log) != 0 {
		t.Fatalf("after the flush: live %d, log %d, want both emptied", len(f.live), len(f.log))
	}
	for _, td := range sink.AllTraces() {
		pdatautil.EachSpan(td, func(sp ptrace.Span) {
			if got := leaves[sp.SpanID()]; got != sp.TraceID() {
				t.Fatalf("span %v left in trace %v, the log said %v", sp.SpanID(), sp.TraceID(), got)
			}
		})
	}
	want, _ := outputOf(t, RewriteFloor, in)
	got, _ := outputOf(t, IndexFloor, in)
	if !maps.Equal(got, want) {
		t.Fatal("the index floor's output differs from the rewrite floor's")
	}
}

// spanKey tells apart a client and a server that share a span ID.
type spanKey struct {
	id   pcommon.SpanID
	kind ptrace.SpanKind
}

type placement struct {
	traceID  pcommon.TraceID
	original string
}

// outputOf runs the input through s (released by Shutdown) and returns
// where each span ended up and how many spans were moved.
func outputOf(t *testing.T, s Subject, in Input) (map[spanKey]placement, int) {
	t.Helper()
	sink := new(consumertest.TracesSink)
	p, tel, err := create(s, in, time.Hour, 4*in.Spans, sink)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background()) //nolint:errcheck
	for _, td := range in.Clone() {
		if err := p.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := map[spanKey]placement{}
	moved := 0
	for _, td := range sink.AllTraces() {
		pdatautil.EachSpan(td, func(sp ptrace.Span) {
			var pl placement
			pl.traceID = sp.TraceID()
			if v, ok := sp.Attributes().Get(originalTraceIDAttribute); ok {
				pl.original = v.Str()
				moved++
			}
			out[spanKey{sp.SpanID(), sp.Kind()}] = pl
		})
	}
	return out, moved
}

// TestClonesKeepTheReceiversLayout: a cloned span has the room for added
// attributes that the receiver's output has (CopyTo alone sizes arrays
// exactly, which would make every added attribute copy the array).
func TestClonesKeepTheReceiversLayout(t *testing.T) {
	in := Generate(Spans10, 2_000)
	clone := in.CloneAs(warmSpace)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, td := range clone {
		pdatautil.EachSpan(td, func(s ptrace.Span) {
			attrs := s.Attributes()
			attrs.EnsureCapacity(attrs.Len() + 2) // what tracestitch adds at most
		})
	}
	runtime.ReadMemStats(&after)
	if n := after.Mallocs - before.Mallocs; n > uint64(in.Spans/100) {
		t.Fatalf("making room for two attributes on %d spans allocated %d times", in.Spans, n)
	}
}
