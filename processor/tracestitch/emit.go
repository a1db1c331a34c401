// Emit: stitched units rewritten and handed downstream in shared calls.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const stitchedByAttribute = "tracestitch.stitched_by"

// outBatch is the released units of one ConsumeTraces call (at most
// release_batch_max_spans spans, unless a lone unit is bigger), in one
// ptrace.Traces: one ResourceSpans per received resource and one ScopeSpans
// per received scope (a copy of each, shared by all the traces whose spans
// arrived under it), so that a release costs a few copies and one call
// downstream, not a copy and a call per trace.
type outBatch struct {
	td     ptrace.Traces
	spans  int
	res    map[*sourceResource]ptrace.ResourceSpans
	scopes map[*source]ptrace.SpanSlice
}

func newOutBatch() *outBatch {
	return &outBatch{
		td:     ptrace.NewTraces(),
		res:    map[*sourceResource]ptrace.ResourceSpans{},
		scopes: map[*source]ptrace.SpanSlice{},
	}
}

// reset starts a new batch; the one handed on belongs to the next consumer.
func (b *outBatch) reset() {
	b.td, b.spans = ptrace.NewTraces(), 0
	clear(b.res)
	clear(b.scopes)
}

// add writes the unit's stitch decisions into its spans and moves them
// into the batch. Spans are walked in the order their records were taken,
// so record i is the i-th span of the unit.
func (b *outBatch) add(u *unit, originalTraceIDAttr string) {
	res := &u.result
	var orig originalIDs
	var (
		lastSrc *source
		dest    ptrace.SpanSlice
	)
	i := 0
	for k, g := range u.groups {
		// Most groups leave as they came: only walk the spans of the rest.
		rewrite := res.traceID != nil && u.rewrite[k]
		for _, p := range g.parts {
			if p.src != lastSrc {
				dest, lastSrc = b.scope(p.src), p.src
			}
			if rewrite {
				for _, span := range p.spans.All() {
					applyDecision(span, res, i, originalTraceIDAttr, &orig)
					i++
				}
			} else {
				i += p.spans.Len()
			}
			p.spans.MoveAndAppendTo(dest)
		}
		g.parts = nil
	}
	b.spans += u.spans
}

// scope returns the batch's copy of src, made on first use.
func (b *outBatch) scope(src *source) ptrace.SpanSlice {
	if dest, ok := b.scopes[src]; ok {
		return dest
	}
	rs, ok := b.res[src.res]
	if !ok {
		rs = b.td.ResourceSpans().AppendEmpty()
		src.res.resource.CopyTo(rs.Resource())
		rs.SetSchemaUrl(src.res.schemaURL)
		b.res[src.res] = rs
	}
	ss := rs.ScopeSpans().AppendEmpty()
	src.scope.CopyTo(ss.Scope())
	ss.SetSchemaUrl(src.schemaURL)
	b.scopes[src] = ss.Spans()
	return ss.Spans()
}

// originalIDs remembers the hex form of the last original trace ID: the
// spans of a moved fragment share it.
type originalIDs struct {
	id  pcommon.TraceID
	hex string
}

func (o *originalIDs) hexOf(id pcommon.TraceID) string {
	if o.hex == "" || o.id != id {
		o.id, o.hex = id, id.String()
	}
	return o.hex
}

func applyDecision(span ptrace.Span, res *stitchResult, i int, originalTraceIDAttr string, orig *originalIDs) {
	moved := res.traceID[i] != span.TraceID()
	m := res.stitchedBy[i]
	if added := boolInt(moved) + boolInt(m != methodNone); added > 0 {
		// grow the attributes once, by what is added (appending would
		// double them)
		attrs := span.Attributes()
		attrs.EnsureCapacity(attrs.Len() + added)
	}
	if moved {
		span.Attributes().PutStr(originalTraceIDAttr, orig.hexOf(span.TraceID()))
		span.SetTraceID(res.traceID[i])
	}
	if m == methodNone {
		return
	}
	span.Attributes().PutStr(stitchedByAttribute, m.String())
	if m != methodRequestID {
		return // only request-ID stitches set a parent or a link
	}
	if p, ok := res.newParent[i]; ok {
		span.SetParentSpanID(p)
	}
	if l, ok := res.linkTo[i]; ok {
		link := span.Links().AppendEmpty()
		link.SetTraceID(l.traceID)
		link.SetSpanID(l.spanID)
		link.Attributes().PutStr(stitchedByAttribute, methodRequestID.String())
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (p *tracestitchProcessor) emit(ctx context.Context, units []*unit) {
	if len(units) == 0 {
		return
	}
	// Telemetry is recorded with a context of its own: a cancelled caller
	// must not lose the counts.
	tctx := context.WithoutCancel(ctx)
	var tally telemetryTally
	left := 0
	for _, u := range units {
		left += u.spans
	}
	p.tel.ProcessorTracestitchSpansBuffered.Add(tctx, -int64(left), p.attrs.self)
	b := newOutBatch()
	now := p.now()
	for _, u := range units {
		tally.add(&u.result)
		if ctx.Err() != nil {
			p.drop(tctx, u.spans, reasonShutdown, ctx.Err())
			continue
		}
		if p.keys != nil {
			p.keys.label(u, now, &tally.keys)
		}
		if b.spans > 0 && b.spans+u.spans > p.cfg.ReleaseBatchMaxSpans {
			p.send(ctx, tctx, b, &tally)
		}
		b.add(u, p.cfg.OriginalTraceIDAttribute)
	}
	p.send(ctx, tctx, b, &tally)
	p.record(tctx, &tally)
}

// send hands the batch to the next consumer and starts a new one; tctx
// records telemetry (see emit).
func (p *tracestitchProcessor) send(ctx, tctx context.Context, b *outBatch, tally *telemetryTally) {
	if b.spans == 0 {
		return
	}
	if err := ctx.Err(); err != nil {
		p.drop(tctx, b.spans, reasonShutdown, err)
	} else if err := p.next.ConsumeTraces(ctx, b.td); err != nil {
		reason := reasonDownstreamError
		if consumererror.IsPermanent(err) {
			reason = reasonDownstreamPermanent
		}
		p.drop(tctx, b.spans, reason, err)
	} else {
		tally.released += int64(b.spans)
	}
	b.reset()
}
