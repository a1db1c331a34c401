// Telemetry: the metrics of a release, recorded once per release.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
) // maxBlamedServices caps the distinct service values of broken_propagation;
// the rest are counted as "other".
const maxBlamedServices = 200

// Reasons of spans_dropped.
const (
	// the next consumer returned a permanent error
	reasonDownstreamPermanent = "downstream_permanent"
	// the next consumer returned a retryable error; retrying is the job of
	// the exporter's retry/queue, the processor does not hold spans twice
	reasonDownstreamError = "downstream_error"
	// Shutdown's context ended before these spans could be handed on
	reasonShutdown = "shutdown_timeout"
)

func (p *tracestitchProcessor) drop(ctx context.Context, spans int, reason string, err error) {
	p.tel.ProcessorTracestitchSpansDropped.Add(ctx, int64(spans),
		metric.WithAttributes(attribute.String("reason", reason)))
	p.logger.Warn("released spans could not be handed to the next consumer; they are dropped",
		zap.Int("spans", spans), zap.String("reason", reason), zap.Error(err))
}

var (
	outcomeAttrs = [...]metric.AddOption{
		outcomeConnected:    metric.WithAttributes(attribute.String("outcome", outcomeConnected.String())),
		outcomeStitched:     metric.WithAttributes(attribute.String("outcome", outcomeStitched.String())),
		outcomeDisconnected: metric.WithAttributes(attribute.String("outcome", outcomeDisconnected.String())),
	}
	methodAttrs = [...]metric.AddOption{
		methodParentID:  metric.WithAttributes(attribute.String("method", methodParentID.String())),
		methodRequestID: metric.WithAttributes(attribute.String("method", methodRequestID.String())),
	}
	keySourceAttrs = func() (a [keySources]metric.AddOption) {
		for s := range keySources {
			a[s] = metric.WithAttributes(attribute.String("source", s.String()))
		}
		return a
	}()
)

// telemetryTally sums the results of the units of one release, so that
// telemetry is recorded once per release rather than once per trace.
type telemetryTally struct {
	keys      keyTally
	outcomes  [3]int64
	stitches  [3]int64
	ambiguous int64
	lateSpans int64
	released  int64
	blame     []string
}

func (t *telemetryTally) add(res *stitchResult) {
	for _, o := range res.traces {
		t.outcomes[o]++
	}
	for m, n := range res.stitches {
		t.stitches[m] += int64(n)
	}
	t.ambiguous += int64(res.ambiguous)
	t.lateSpans += int64(res.lateSpans)
	t.blame = append(t.blame, res.blame...)
}

func (p *tracestitchProcessor) record(ctx context.Context, t *telemetryTally) {
	for o, n := range t.outcomes {
		if n > 0 {
			p.tel.ProcessorTracestitchTraces.Add(ctx, n, outcomeAttrs[o])
		}
	}
	for m := methodParentID; m <= methodRequestID; m++ {
		if n := t.stitches[m]; n > 0 {
			p.tel.ProcessorTracestitchStitches.Add(ctx, n, methodAttrs[m])
		}
	}
	if t.ambiguous > 0 {
		p.tel.ProcessorTracestitchAmbiguous.Add(ctx, t.ambiguous)
	}
	if t.lateSpans > 0 {
		p.tel.ProcessorTracestitchLateSpans.Add(ctx, t.lateSpans)
	}
	for src, n := range t.keys.sources {
		if n > 0 {
			p.tel.ProcessorTracestitchKeys.Add(ctx, n, keySourceAttrs[src])
		}
	}
	if t.keys.conflicts > 0 {
		p.tel.ProcessorTracestitchKeyConflicts.Add(ctx, t.keys.conflicts)
	}
	if t.released > 0 {
		p.tel.ProcessorTracestitchSpansReleased.Add(ctx, t.released)
	}
	if len(t.blame) == 0 {
		return
	}
	counts := map[string]int64{}
	for _, svc := range t.blame {
		counts[p.blameLabel(svc)]++
	}
	for svc, n := range counts {
		p.tel.ProcessorTracestitchBrokenPropagation.Add(ctx, n,
			metric.WithAttributes(attribute.String("culprit_service", svc)))
	}
}

// blameLabel bounds the cardinality of the service attribute.
func (p *tracestitchProcessor) blameLabel(svc string) string {
	if svc == "" {
		return "unknown"
	}
	p.blameMu.Lock()
	defer p.blameMu.Unlock()
	if p.blamed[svc] {
		return svc
	}
	if len(p.blamed) >= maxBlamedServices {
		return "other"
	}
	p.blamed[svc] = true
	return svc
}
