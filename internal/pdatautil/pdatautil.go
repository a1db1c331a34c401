// Package pdatautil holds small pdata helpers shared by the processor, the
// simulator and the benchmarks.
package pdatautil

import "go.opentelemetry.io/collector/pdata/ptrace"

// EachSpan calls f for every span of td, in order.
func EachSpan(td ptrace.Traces, f func(ptrace.Span)) {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				f(spans.At(k))
			}
		}
	}
}
