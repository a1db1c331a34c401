// Telemetry: the metrics of a release, recorded once per release.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
)

// maxBlamedServices caps the distinct service values of broken_propagation;
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
	p.tel.ProcessorTracestitchSpansDropped.Add(ctx, int64(spans), p.attrs.with("reason", reason))
	p.logger.Warn("released spans could not be handed to the next consumer; they are dropped",
		zap.Int("spans", spans), zap.String("reason", reason), zap.Error(err))
}

// metricAttrs are the attribute sets of one processor's measurements. Each
// carries `processor`, the component ID, as the batch processor's do, so
// that two instances in one collector (a key stage and a stitch stage)
// report apart.
type metricAttrs struct {
	id         attribute.KeyValue
	self       metric.MeasurementOption
	outcomes   [3]metric.MeasurementOption
	methods    [3]metric.MeasurementOption // by stitchMethod
	keySources [keySources]metric.MeasurementOption
}

func newMetricAttrs(id component.ID) *metricAttrs {
	a := &metricAttrs{id: attribute.String("processor", id.String())}
	a.self = metric.WithAttributes(a.id)
	for o := range a.outcomes {
		a.outcomes[o] = a.with("outcome", outcome(o).String())
	}
	for m := methodParentID; m <= methodRequestID; m++ {
		a.methods[m] = a.with("method", m.String())
	}
	for s := range a.keySources {
		a.keySources[s] = a.with("source", keySource(s).String())
	}
	return a
}

// with is the processor's attribute and one more.
func (a *metricAttrs) with(key, value string) metric.MeasurementOption {
	return metric.WithAttributes(a.id, attribute.String(key, value))
}

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
			p.tel.ProcessorTracestitchTraces.Add(ctx, n, p.attrs.outcomes[o])
		}
	}
	for m := methodParentID; m <= methodRequestID; m++ {
		if n := t.stitches[m]; n > 0 {
			p.tel.ProcessorTracestitchStitches.Add(ctx, n, p.attrs.methods[m])
		}
	}
	if t.ambiguous > 0 {
		p.tel.ProcessorTracestitchAmbiguous.Add(ctx, t.ambiguous, p.attrs.self)
	}
	if t.lateSpans > 0 {
		p.tel.ProcessorTracestitchLateSpans.Add(ctx, t.lateSpans, p.attrs.self)
	}
	for src, n := range t.keys.sources {
		if n > 0 {
			p.tel.ProcessorTracestitchKeys.Add(ctx, n, p.attrs.keySources[src])
		}
	}
	if t.keys.conflicts > 0 {
		p.tel.ProcessorTracestitchKeyConflicts.Add(ctx, t.keys.conflicts, p.attrs.self)
	}
	if t.released > 0 {
		p.tel.ProcessorTracestitchSpansReleased.Add(ctx, t.released, p.attrs.self)
	}
	if len(t.blame) == 0 {
		return
	}
	counts := map[string]int64{}
	for _, svc := range t.blame {
		counts[p.blameLabel(svc)]++
	}
	for svc, n := range counts {
		p.tel.ProcessorTracestitchBrokenPropagation.Add(ctx, n, p.attrs.with("culprit_service", svc))
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
