package tracestitch

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/stretchr/testify/require"
)

// TestReleasedIndexLazy: releases only log their spans; the first lookup
// indexes them in release order (a span ID released again in the same
// final trace stays one parent, in another becomes ambiguous), and expiry
// takes indexed and unindexed releases out alike.
func TestReleasedIndexLazy(t *testing.T) {
	x := newReleasedIndex(time.Minute, 100)
	t0 := time.Unix(1000, 0)
	trace := func(b byte) pcommon.TraceID { return pcommon.TraceID{b} }
	rec := func(tid byte, id byte, kind ptrace.SpanKind, svc serviceID) spanRec {
		return spanRec{traceID: trace(tid), spanID: pcommon.SpanID{id}, kind: kind, service: svc}
	}
	release := func(at time.Time, final pcommon.TraceID, recs ...spanRec) {
		finals := make([]pcommon.TraceID, len(recs))
		for i := range finals {
			finals[i] = final
		}
		x.add(recs, finals, at)
	}
	release(t0, trace(1), rec(1, 1, ptrace.SpanKindClient, 1), rec(1, 2, ptrace.SpanKindInternal, 1))
	release(t0.Add(time.Second), trace(1), rec(1, 1, ptrace.SpanKindServer, 2))   // shared client/server ID, same trace
	release(t0.Add(2*time.Second), trace(3), rec(3, 2, ptrace.SpanKindClient, 3)) // span ID 2 again, other trace
	require.Empty(t, x.bySpan, "nothing indexed before a lookup")
	require.Equal(t, 4, x.len())

	s, ok := x.span(pcommon.SpanID{1})
	require.True(t, ok)
	require.Equal(t, releasedSpan{traceID: trace(1)}, s, "one parent: a shared client/server pair in one trace")
	s, ok = x.span(pcommon.SpanID{2})
	require.True(t, ok)
	require.True(t, s.ambiguous)
	require.Len(t, x.bySpan, 2)

	release(t0.Add(3*time.Second), trace(4), rec(4, 9, ptrace.SpanKindServer, 4))
	x.expire(t0.Add(61*time.Second + 500*time.Millisecond)) // the first two releases leave
	require.Equal(t, 2, x.len())
	_, ok = x.span(pcommon.SpanID{1})
	require.False(t, ok, "expired with its newest release")
	s, ok = x.span(pcommon.SpanID{9})
	require.True(t, ok, "logged after the last lookup, indexed by this one")
	require.Equal(t, trace(4), s.traceID)
	x.expire(t0.Add(time.Hour))
	require.Zero(t, x.len())
	require.Empty(t, x.bySpan)
	_, ok = x.span(pcommon.SpanID{9})
	require.False(t, ok)
}
