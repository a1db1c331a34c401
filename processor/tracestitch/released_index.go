package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// releasedIndex remembers released spans for late_span_ttl so that a
// fragment arriving after its trace left can still join it (backends merge
// spans by trace ID). Bounded by max_index_entries (one entry per span):
// the oldest release goes first. Releases are kept in order, which is also
// expiry order, one record per release unit rather than per span.
type releasedIndex struct {
	ttl        int64 // ns
	maxEntries int

	// Values of bySpan and byTrace hold no pointers, so the garbage
	// collector does not scan these large maps; services are interned.
	bySpan  map[pcommon.SpanID]indexedSpan
	byKey   map[reqKey][]releasedServer
	byTrace map[pcommon.TraceID]indexedTrace
	batches []releasedBatch
	head    int
	entries int
	nextSeq uint64

	serviceIDs map[string]uint32
	services   []string // services[0] is "" (unknown or over the cap)
}

// maxInternedServices bounds the service table; later services are
// remembered as unknown.
const maxInternedServices = 10_000

type indexedSpan struct {
	traceID pcommon.TraceID
	seq     uint64
	service uint32
}

type indexedTrace struct {
	final pcommon.TraceID
	seq   uint64
}

// releasedBatch is what one release added, so that it can be taken out.
type releasedBatch struct {
	at     int64
	seq    uint64
	spans  []pcommon.SpanID
	traces []pcommon.TraceID
	keys   []reqKey
}

func newReleasedIndex(ttl time.Duration, maxEntries int) *releasedIndex {
	return &releasedIndex{
		ttl:        ttl.Nanoseconds(),
		maxEntries: maxEntries,
		bySpan:     make(map[pcommon.SpanID]indexedSpan),
		byKey:      make(map[reqKey][]releasedServer),
		byTrace:    make(map[pcommon.TraceID]indexedTrace),
		serviceIDs: map[string]uint32{"": 0},
		services:   []string{""},
	}
}

func (x *releasedIndex) intern(service string) uint32 {
	if id, ok := x.serviceIDs[service]; ok {
		return id
	}
	if len(x.services) >= maxInternedServices {
		return 0
	}
	id := uint32(len(x.services))
	x.serviceIDs[service] = id
	x.services = append(x.services, service)
	return id
}

func (x *releasedIndex) enabled() bool { return x.ttl > 0 && x.maxEntries > 0 }

func (x *releasedIndex) len() int { return x.entries }

// add records released spans with the trace ID they left with.
func (x *releasedIndex) add(recs []spanRec, traceIDs []pcommon.TraceID, now time.Time) {
	if !x.enabled() || len(recs) == 0 {
		return
	}
	x.nextSeq++
	b := releasedBatch{at: now.UnixNano(), seq: x.nextSeq, spans: make([]pcommon.SpanID, 0, len(recs))}
	for i := range recs {
		r := &recs[i]
		if t, ok := x.byTrace[r.traceID]; !ok || t.seq != b.seq {
			x.byTrace[r.traceID] = indexedTrace{final: traceIDs[i], seq: b.seq}
			b.traces = append(b.traces, r.traceID)
		}
		if r.spanID.IsEmpty() {
			continue
		}
		x.bySpan[r.spanID] = indexedSpan{traceID: traceIDs[i], seq: b.seq, service: x.intern(r.service)}
		b.spans = append(b.spans, r.spanID)
		if r.kind == ptrace.SpanKindServer && !r.reqKey.empty() && r.instance != "" {
			x.byKey[r.reqKey] = append(x.byKey[r.reqKey], releasedServer{
				traceID: traceIDs[i], spanID: r.spanID, instance: r.instance,
				start: r.start, end: r.end, service: r.service, seq: b.seq,
			})
			b.keys = append(b.keys, r.reqKey)
		}
	}
	x.batches = append(x.batches, b)
	x.entries += len(b.spans)
	for x.entries > x.maxEntries {
		x.dropOldest()
	}
}

// expire drops releases older than the TTL.
func (x *releasedIndex) expire(now time.Time) {
	n := now.UnixNano()
	for x.head < len(x.batches) && n-x.batches[x.head].at > x.ttl {
		x.dropOldest()
	}
}

func (x *releasedIndex) dropOldest() {
	b := &x.batches[x.head]
	// A later release of the same span or trace ID replaced an entry: keep it.
	for _, id := range b.spans {
		if s, ok := x.bySpan[id]; ok && s.seq == b.seq {
			delete(x.bySpan, id)
		}
	}
	for _, id := range b.traces {
		if t, ok := x.byTrace[id]; ok && t.seq == b.seq {
			delete(x.byTrace, id)
		}
	}
	for _, k := range b.keys {
		list := x.byKey[k]
		for len(list) > 0 && list[0].seq <= b.seq {
			list = list[1:]
		}
		if len(list) == 0 {
			delete(x.byKey, k)
		} else {
			x.byKey[k] = list
		}
	}
	x.entries -= len(b.spans)
	*b = releasedBatch{}
	x.head++
	if x.head > 64 && x.head > len(x.batches)/2 {
		n := copy(x.batches, x.batches[x.head:])
		clear(x.batches[n:])
		x.batches = x.batches[:n]
		x.head = 0
	}
}

func (x *releasedIndex) span(id pcommon.SpanID) (releasedSpan, bool) {
	s, ok := x.bySpan[id]
	return releasedSpan{traceID: s.traceID, service: x.services[s.service]}, ok
}

func (x *releasedIndex) trace(id pcommon.TraceID) (pcommon.TraceID, bool) {
	t, ok := x.byTrace[id]
	return t.final, ok
}

func (x *releasedIndex) servers(key reqKey) []releasedServer {
	return x.byKey[key]
}
