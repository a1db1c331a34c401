package bench

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
)

// The regroup-only floor: the cheapest pass that groups spans by trace ID
// with pdata moves and emits each group. No timers, no indexes: it flushes
// on Shutdown. A benchmark helper, not product code.

var floorType = component.MustNewType("regroupfloor")

type floorConfig struct{}

func newFloorFactory() processor.Factory {
	return processor.NewFactory(floorType,
		func() component.Config { return &floorConfig{} },
		processor.WithTraces(func(_ context.Context, _ processor.Settings, _ component.Config, next consumer.Traces) (processor.Traces, error) {
			return &floor{next: next, groups: map[pcommon.TraceID]ptrace.Traces{}}, nil
		}, component.StabilityLevelDevelopment))
}

type floor struct {
	mu     sync.Mutex
	next   consumer.Traces
	groups map[pcommon.TraceID]ptrace.Traces
}

func (f *floor) Start(context.Context, component.Host) error { return nil }
func (f *floor) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: true}
}

func (f *floor) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			dests := map[pcommon.TraceID]ptrace.SpanSlice{}
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				s := spans.At(k)
				tid := s.TraceID()
				dest, ok := dests[tid]
				if !ok {
					g, ok := f.groups[tid]
					if !ok {
						g = ptrace.NewTraces()
						f.groups[tid] = g
					}
					rsd := g.ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(rsd.Resource())
					ssd := rsd.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(ssd.Scope())
					dest = ssd.Spans()
					dests[tid] = dest
				}
				s.MoveTo(dest.AppendEmpty())
			}
		}
	}
	return nil
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
