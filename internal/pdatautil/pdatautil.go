// Package pdatautil holds small pdata helpers shared by the processor, the
// simulator and the benchmarks.
package pdatautil

import "go.opentelemetry.io/collector/pdata/ptrace"

// EachScope calls f for every scope of td with its resource, in order.
func EachScope(td ptrace.Traces, f func(ptrace.ResourceSpans, ptrace.ScopeSpans)) {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			f(rs, sss.At(j))
		}
	}
}

// EachSpan calls f for every span of td, in order.
func EachSpan(td ptrace.Traces, f func(ptrace.Span)) {
	EachScope(td, func(_ ptrace.ResourceSpans, ss ptrace.ScopeSpans) {
		spans := ss.Spans()
		for k := 0; k < spans.Len(); k++ {
			f(spans.At(k))
		}
	})
}
