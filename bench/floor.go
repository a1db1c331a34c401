package bench

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
	"github.com/tracestitch/tracestitch/processor/tracestitch"
)

// The regroup-only floor: the cheapest pass that groups spans by trace ID
// with pdata moves and emits each group. No timers, no indexes: it flushes
// on Shutdown. A benchmark helper, not product code.
//
// Given moves, it is the rewrite floor: the same pass, which also moves
// each fragment into the trace the stitch decisions put it in, with the
// rewrite every stitcher's output needs: the new trace ID and the
// original one kept in an attribute, on every moved span. The decisions are
// given (the simulator's ground truth), so it finds nothing; it is the
// cheapest pass that produces stitched output.
//
// With index set, it is the index floor: the rewrite floor plus the least
// span-ID bookkeeping any stitcher needs. Every
// buffered span is findable by its span ID (an orphan's parent is looked
// for among all buffered spans), and every released span is kept for late
// fragments with the trace it left in. Per span that is one insert into a
// Go map (span ID to a 4-byte position) and one append to a log (span ID,
// final trace ID), which serves as the released-span index, to be indexed
// when a late span asks (as tracestitch does). Both are emptied in bulk at
// flush, which no buffer releasing trace by trace can do. It is a lower
// bound: no request IDs, records, timers, stitch or outcomes.

var floorType = component.MustNewType("regroupfloor")

// originalTraceIDAttribute is where tracestitch keeps a moved span's trace ID.
var originalTraceIDAttribute = tracestitch.NewFactory().CreateDefaultConfig().(*tracestitch.Config).OriginalTraceIDAttribute

type floorConfig struct {
	// moves maps a fragment's trace ID to the trace ID it is stitched into.
	moves map[pcommon.TraceID]pcommon.TraceID
	index bool
}

func newFloorFactory() processor.Factory {
	return processor.NewFactory(floorType,
		func() component.Config { return &floorConfig{} },
		processor.WithTraces(func(_ context.Context, _ processor.Settings, cfg component.Config, next consumer.Traces) (processor.Traces, error) {
			c := cfg.(*floorConfig)
			f := &floor{next: next, groups: map[pcommon.TraceID]ptrace.Traces{}, moves: c.moves}
			if c.index {
				f.live = map[pcommon.SpanID]uint32{}
			}
			return f, nil
		}, component.StabilityLevelDevelopment))
}

type floor struct {
	mu     sync.Mutex
	next   consumer.Traces
	groups map[pcommon.TraceID]ptrace.Traces
	moves  map[pcommon.TraceID]pcommon.TraceID
	// the index floor's (live is nil otherwise): buffered spans by span ID,
	// as positions in log
	live map[pcommon.SpanID]uint32
	log  []loggedSpan
}

// loggedSpan is a buffered span of the index floor and the trace ID it is
// released in.
type loggedSpan struct {
	span  pcommon.SpanID
	trace pcommon.TraceID
}

// logSpan is the index floor's bookkeeping of a span of trace tid that
// moves as m says (nil: it stays).
func (f *floor) logSpan(id pcommon.SpanID, tid pcommon.TraceID, m *move) {
	if m != nil {
		tid = m.to
	}
	f.live[id] = uint32(len(f.log))
	f.log = append(f.log, loggedSpan{id, tid})
}

// destination is where the spans of a trace ID in one scope go.
type destination struct {
	spans ptrace.SpanSlice
	move  *move // nil: the spans keep their trace ID
}

// move puts spans into trace to and keeps their trace ID in original.
type move struct {
	to       pcommon.TraceID
	original string
}

func (f *floor) Start(context.Context, component.Host) error { return nil }
func (f *floor) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: true}
}

func (f *floor) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.moves != nil {
		f.consumeMoving(td)
		return nil
	}
	pdatautil.EachScope(td, func(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) {
		dests := map[pcommon.TraceID]ptrace.SpanSlice{}
		spans := ss.Spans()
		for k := 0; k < spans.Len(); k++ {
			s := spans.At(k)
			tid := s.TraceID()
			dest, ok := dests[tid]
			if !ok {
				dest = f.scopeOf(tid, rs, ss)
				dests[tid] = dest
			}
			s.MoveTo(dest.AppendEmpty())
		}
	})
	return nil
}

// scopeOf adds a copy of rs's resource and ss's scope to the group of
// trace ID group and returns the copy's spans.
func (f *floor) scopeOf(group pcommon.TraceID, rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) ptrace.SpanSlice {
	g, ok := f.groups[group]
	if !ok {
		g = ptrace.NewTraces()
		f.groups[group] = g
	}
	rsd := g.ResourceSpans().AppendEmpty()
	rs.Resource().CopyTo(rsd.Resource())
	ssd := rsd.ScopeSpans().AppendEmpty()
	ss.Scope().CopyTo(ssd.Scope())
	return ssd.Spans()
}

// consumeMoving is ConsumeTraces of the rewrite floor. Its per-span loop is
// kept apart from the floor's, which a shared one (with this loop's bigger
// map values) made about 5% slower: the anchor pays nothing for it.
func (f *floor) consumeMoving(td ptrace.Traces) {
	pdatautil.EachScope(td, func(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) {
		dests := map[pcommon.TraceID]destination{}
		spans := ss.Spans()
		for k := 0; k < spans.Len(); k++ {
			s := spans.At(k)
			tid := s.TraceID()
			dest, ok := dests[tid]
			if !ok {
				group := tid
				if to, moved := f.moves[tid]; moved {
					dest.move = &move{to: to, original: tid.String()}
					group = to
				}
				dest.spans = f.scopeOf(group, rs, ss)
				dests[tid] = dest
			}
			if f.live != nil {
				f.logSpan(s.SpanID(), tid, dest.move)
			}
			if m := dest.move; m != nil {
				attrs := s.Attributes()
				attrs.EnsureCapacity(attrs.Len() + 1)
				attrs.PutStr(originalTraceIDAttribute, m.original)
				s.SetTraceID(m.to)
			}
			s.MoveTo(dest.spans.AppendEmpty())
		}
	})
}

func (f *floor) Shutdown(ctx context.Context) error { return f.flush(ctx) }

// flush emits every group; the map is kept (cleared) for the next round.
func (f *floor) flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, g := range f.groups {
		if err := f.next.ConsumeTraces(ctx, g); err != nil {
			return err
		}
	}
	clear(f.groups)
	clear(f.live)
	f.log = f.log[:0]
	return nil
}
