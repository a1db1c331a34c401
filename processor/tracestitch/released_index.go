package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// releasedIndex remembers released spans for late_span_ttl so that a
// fragment arriving after its trace left can still join it (backends merge
// spans by trace ID). Bounded by max_index_entries: the oldest entries go
// first. Entries are kept in insertion order, which is also expiry order.
type releasedIndex struct {
	ttl        time.Duration
	maxEntries int

	bySpan map[pcommon.SpanID]indexedSpan
	byKey  map[string][]releasedServer
	// byTrace maps a released trace ID to the trace ID its spans left with.
	byTrace map[pcommon.TraceID]indexedTrace
	order   []indexEntry
	head    int
	nextSeq uint64
}

type indexedSpan struct {
	releasedSpan
	seq uint64
}

type indexedTrace struct {
	final pcommon.TraceID
	seq   uint64 // seq of the newest span of the trace
}

type indexEntry struct {
	at      time.Time
	seq     uint64
	spanID  pcommon.SpanID
	traceID pcommon.TraceID
	// reqKey is set when the entry also added a server candidate.
	reqKey string
}

func newReleasedIndex(ttl time.Duration, maxEntries int) *releasedIndex {
	return &releasedIndex{
		ttl:        ttl,
		maxEntries: maxEntries,
		bySpan:     make(map[pcommon.SpanID]indexedSpan),
		byKey:      make(map[string][]releasedServer),
		byTrace:    make(map[pcommon.TraceID]indexedTrace),
	}
}

func (x *releasedIndex) enabled() bool { return x.ttl > 0 && x.maxEntries > 0 }

func (x *releasedIndex) len() int { return len(x.order) - x.head }

// add records released spans with the trace ID they left with.
func (x *releasedIndex) add(recs []spanRec, traceIDs []pcommon.TraceID, now time.Time) {
	if !x.enabled() {
		return
	}
	for i := range recs {
		r := &recs[i]
		x.nextSeq++
		e := indexEntry{at: now, seq: x.nextSeq, spanID: r.spanID, traceID: r.traceID}
		x.bySpan[r.spanID] = indexedSpan{releasedSpan{traceID: traceIDs[i], service: r.service}, e.seq}
		x.byTrace[r.traceID] = indexedTrace{final: traceIDs[i], seq: e.seq}
		if r.kind == ptrace.SpanKindServer && r.reqKey != "" && r.instance != "" {
			e.reqKey = r.reqKey
			x.byKey[r.reqKey] = append(x.byKey[r.reqKey], releasedServer{
				traceID: traceIDs[i], spanID: r.spanID, instance: r.instance,
				start: r.start, end: r.end, service: r.service,
			})
		}
		x.order = append(x.order, e)
		for x.len() > x.maxEntries {
			x.dropOldest()
		}
	}
}

// expire drops entries older than the TTL.
func (x *releasedIndex) expire(now time.Time) {
	for x.len() > 0 && now.Sub(x.order[x.head].at) > x.ttl {
		x.dropOldest()
	}
}

func (x *releasedIndex) dropOldest() {
	e := x.order[x.head]
	x.order[x.head] = indexEntry{}
	x.head++
	// A later release of the same span ID replaced the map entry: keep it.
	if s, ok := x.bySpan[e.spanID]; ok && s.seq == e.seq {
		delete(x.bySpan, e.spanID)
	}
	if t, ok := x.byTrace[e.traceID]; ok && t.seq == e.seq {
		delete(x.byTrace, e.traceID)
	}
	if e.reqKey != "" {
		list := x.byKey[e.reqKey]
		if len(list) <= 1 {
			delete(x.byKey, e.reqKey)
		} else {
			x.byKey[e.reqKey] = list[1:]
		}
	}
	if x.head > 1024 && x.head > len(x.order)/2 {
		n := copy(x.order, x.order[x.head:])
		clear(x.order[n:])
		x.order = x.order[:n]
		x.head = 0
	}
}

func (x *releasedIndex) span(id pcommon.SpanID) (releasedSpan, bool) {
	s, ok := x.bySpan[id]
	return s.releasedSpan, ok
}

func (x *releasedIndex) trace(id pcommon.TraceID) (pcommon.TraceID, bool) {
	t, ok := x.byTrace[id]
	return t.final, ok
}

func (x *releasedIndex) servers(key string) []releasedServer {
	return x.byKey[key]
}
