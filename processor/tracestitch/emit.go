package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const stitchedByAttribute = "tracestitch.stitched_by"

// build writes the unit's stitch decisions into its spans and moves them
// into one ptrace.Traces, under copies of the resources and scopes they
// arrived with (parts of one source in a row share one copy). Spans are
// walked in the order their records were taken, so record i is the i-th
// span of the unit.
func (u *unit) build(originalTraceIDAttr string) ptrace.Traces {
	res := &u.result
	out := ptrace.NewTraces()
	rss := out.ResourceSpans()
	n := 0
	for _, g := range u.groups {
		n += len(g.parts)
	}
	rss.EnsureCapacity(n)
	var orig originalIDs
	var (
		lastRes *sourceResource
		lastSrc *source
		rs      ptrace.ResourceSpans
		dest    ptrace.SpanSlice
	)
	i := 0
	for k, g := range u.groups {
		// Most groups leave as they came: only walk the spans of the rest.
		rewrite := res.traceID != nil && u.rewrite[k]
		for _, p := range g.parts {
			if p.src != lastSrc {
				if p.src.res != lastRes {
					rs = rss.AppendEmpty()
					p.src.res.resource.CopyTo(rs.Resource())
					rs.SetSchemaUrl(p.src.res.schemaURL)
					lastRes = p.src.res
				}
				ss := rs.ScopeSpans().AppendEmpty()
				p.src.scope.CopyTo(ss.Scope())
				ss.SetSchemaUrl(p.src.schemaURL)
				dest, lastSrc = ss.Spans(), p.src
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
	return out
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

// markRewrites records which groups of the unit have spans to rewrite;
// recs are the unit's records, in group order.
func (u *unit) markRewrites(recs []spanRec) {
	res := &u.result
	if res.traceID == nil {
		return
	}
	u.rewrite = make([]bool, len(u.groups))
	lo := 0
	for k, n := range u.groupSpans {
		hi := lo + n
		// a new parent or link goes with a stitch method, so this covers them
		for i := lo; i < hi && !u.rewrite[k]; i++ {
			u.rewrite[k] = res.traceID[i] != recs[i].traceID || res.stitchedBy[i] != methodNone
		}
		lo = hi
	}
}
func applyDecision(span ptrace.Span, res *stitchResult, i int, originalTraceIDAttr string, orig *originalIDs) {
	moved := res.traceID[i] != span.TraceID()
	m := res.stitchedBy[i]
	if added := b2i(moved) + b2i(m != methodNone); added > 0 {
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

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
