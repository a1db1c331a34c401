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
// rewrite every stitcher's output needs (issue 1): the new trace ID and the
// original one kept in an attribute, on every moved span. The decisions are
// given (the simulator's ground truth), so it finds nothing; it is the
// cheapest pass that produces stitched output.

var floorType = component.MustNewType("regroupfloor")

// originalTraceIDAttribute is where tracestitch keeps a moved span's trace ID.
var originalTraceIDAttribute = tracestitch.NewFactory().CreateDefaultConfig().(*tracestitch.Config).OriginalTraceIDAttribute

type floorConfig struct {
	// moves maps a fragment's trace ID to the trace ID it is stitched into.
	moves map[pcommon.TraceID]pcommon.TraceID
}

func newFloorFactory() processor.Factory {
	return processor.NewFactory(floorType,
		func() component.Config { return &floorConfig{} },
		processor.WithTraces(func(_ context.Context, _ processor.Settings, cfg component.Config, next consumer.Traces) (processor.Traces, error) {
			return &floor{next: next, groups: map[pcommon.TraceID]ptrace.Traces{}, moves: cfg.(*floorConfig).moves}, nil
		}, component.StabilityLevelDevelopment))
}

type floor struct {
	mu     sync.Mutex
	next   consumer.Traces
	groups map[pcommon.TraceID]ptrace.Traces
	moves  map[pcommon.TraceID]pcommon.TraceID
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
	return nil
}
