package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
)

const stitchedByAttribute = "tracestitch.stitched_by"

// build writes the unit's stitch decisions into its spans and moves them
// into one ptrace.Traces. Spans are walked in the order their records were
// taken, so record i is the i-th span of the unit.
func (u *unit) build(originalTraceIDAttr string) ptrace.Traces {
	out := ptrace.NewTraces()
	res := &u.result
	i := 0
	for _, g := range u.groups {
		n := g.td.SpanCount()
		// Most groups leave as they came: only walk the pdata of the rest.
		if u.changes(i, i+n) {
			pdatautil.EachSpan(g.td, func(span ptrace.Span) {
				applyDecision(span, res, i, originalTraceIDAttr)
				i++
			})
		} else {
			i += n
		}
		g.td.ResourceSpans().MoveAndAppendTo(out.ResourceSpans())
		g.td = ptrace.Traces{}
	}
	return out
}

// changes reports whether any of records [lo, hi) is rewritten.
func (u *unit) changes(lo, hi int) bool {
	res := &u.result
	if res.newParent != nil || res.linkTo != nil {
		return true
	}
	for i := lo; i < hi; i++ {
		if res.traceID[i] != u.recs[i].traceID || res.stitchedBy[i] != methodNone {
			return true
		}
	}
	return false
}

func applyDecision(span ptrace.Span, res *stitchResult, i int, originalTraceIDAttr string) {
	if tid := res.traceID[i]; tid != span.TraceID() {
		span.Attributes().PutStr(originalTraceIDAttr, span.TraceID().String())
		span.SetTraceID(tid)
	}
	if m := res.stitchedBy[i]; m != methodNone {
		span.Attributes().PutStr(stitchedByAttribute, m.String())
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
