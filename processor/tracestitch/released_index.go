// The index of released spans that late fragments join through.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// releasedIndex remembers released spans for late_span_ttl so that a
// fragment arriving after its trace left can still join it (backends merge
// spans by trace ID). Bounded by max_index_entries (one entry per span):
// the oldest release goes first. Releases are kept in order, which is also
// expiry order, one record per release unit rather than per span.
//
// Everything here is pointer-free (the garbage collector does not scan it)
// and small. What a release added is logged in queues shared by all
// releases, so that a release allocates nothing once they have grown.
//
// The per-span map is built lazily: a release only logs its spans (12
// bytes each, appended in order), and the first lookup of a span ID indexes
// the releases logged since the previous one, in release order. A flow
// whose late spans never look up a parent (the common case) pays no map
// operation per span; one that does pays each span's insertion once, as an
// eager index would. Releases that expire before any lookup are never
// indexed.
type releasedIndex struct {
	ttl        int64 // ns
	maxEntries int

	bySpan  map[pcommon.SpanID]indexedSpan
	byTrace map[pcommon.TraceID]indexedTrace
	// byKey holds, per request ID (64-bit fold), 1 + the position of the
	// newest ingress span with it in servers; each links to the previous.
	// Like bySpan it is built lazily: servers up to indexedServers (an
	// absolute position) are in it.
	byKey          map[uint64]uint64
	indexedServers uint64

	batches queue[loggedRelease]
	spans   queue[loggedSpan]
	// indexedSeq: releases up to this sequence number are in bySpan.
	indexedSeq uint64
	traces     queue[pcommon.TraceID]
	servers    queue[indexedServer]
	finals     queue[pcommon.TraceID] // distinct final trace IDs of each release
	entries    int
	nextSeq    uint64
}

// indexedSpan points at the release that added the span: seq is the low 32
// bits of its sequence number (fewer than 2^32 releases are ever live) and
// final indexes that release's final trace IDs.
type indexedSpan struct {
	seq   uint32
	final uint32
}

// loggedSpan is a released span as its release logged it, until indexed.
type loggedSpan struct {
	id    pcommon.SpanID
	final uint32
}

type indexedTrace struct {
	seq   uint32
	final uint32
}

type indexedServer struct {
	releasedServer
	key  reqKey
	prev uint64 // 1 + position of the previous server with the same fold, 0 for none
}

// loggedRelease is what one release added, as counts of the shared queues,
// so that it can be taken out again.
type loggedRelease struct {
	at                          int64
	seq                         uint64
	spans, traces, keys, finals int
	// finalsBase is how many finals were pushed before this release's;
	// spansBase the same for logged spans.
	finalsBase, spansBase uint64
}

func newReleasedIndex(ttl time.Duration, maxEntries int) *releasedIndex {
	return &releasedIndex{
		ttl:        ttl.Nanoseconds(),
		maxEntries: maxEntries,
		bySpan:     make(map[pcommon.SpanID]indexedSpan),
		byKey:      make(map[uint64]uint64),
		byTrace:    make(map[pcommon.TraceID]indexedTrace),
	}
}

func (x *releasedIndex) enabled() bool { return x.ttl > 0 && x.maxEntries > 0 }

func (x *releasedIndex) len() int { return x.entries }

// add records released spans with the trace ID they left with.
func (x *releasedIndex) add(recs []spanRec, traceIDs []pcommon.TraceID, now time.Time) {
	if !x.enabled() || len(recs) == 0 {
		return
	}
	x.nextSeq++
	b := loggedRelease{at: now.UnixNano(), seq: x.nextSeq, finalsBase: x.finals.pushed, spansBase: x.spans.pushed}
	seq := uint32(b.seq)
	finalOf := func(tid pcommon.TraceID) uint32 {
		// A unit leaves with one trace ID or a few (disconnected fragments):
		// look at the newest few; a repeat beyond them is only stored twice.
		for i := 0; i < min(b.finals, 8); i++ {
			if x.finals.fromEnd(i) == tid {
				return uint32(b.finals - 1 - i)
			}
		}
		x.finals.push(tid)
		b.finals++
		return uint32(b.finals - 1)
	}
	lastFinal, lastIdx := pcommon.TraceID{}, uint32(0)
	for i := range recs {
		r := &recs[i]
		fi := lastIdx
		if i == 0 || traceIDs[i] != lastFinal {
			fi = finalOf(traceIDs[i])
			lastFinal, lastIdx = traceIDs[i], fi
		}
		// records come grouped by trace ID: look each one up once
		if i == 0 || r.traceID != recs[i-1].traceID {
			if t, ok := x.byTrace[r.traceID]; !ok || t.seq != seq {
				x.byTrace[r.traceID] = indexedTrace{seq: seq, final: fi}
				x.traces.push(r.traceID)
				b.traces++
			}
		}
		if r.spanID.IsEmpty() {
			continue
		}
		x.spans.push(loggedSpan{id: r.spanID, final: fi})
		b.spans++
		if r.ingressCandidate() {
			x.servers.push(indexedServer{
				releasedServer: releasedServer{
					traceID: traceIDs[i], spanID: r.spanID, instance: r.instance,
					start: r.start, end: r.end, service: r.service,
				},
				key: r.reqKey,
			})
			b.keys++
		}
	}
	x.batches.push(b)
	x.entries += b.spans
	for x.entries > x.maxEntries {
		x.dropOldest()
	}
}

// expire drops releases older than the TTL.
func (x *releasedIndex) expire(now time.Time) {
	n := now.UnixNano()
	for x.batches.len() > 0 && n-x.batches.at(0).at > x.ttl {
		x.dropOldest()
	}
}

func (x *releasedIndex) dropOldest() {
	b := x.batches.pop()
	seq := uint32(b.seq)
	// A later release of the same span or trace ID replaced an entry: keep it.
	indexed := b.seq <= x.indexedSeq
	for range b.spans {
		id := x.spans.pop().id
		if !indexed {
			continue
		}
		if s, ok := x.bySpan[id]; ok && s.seq == seq {
			delete(x.bySpan, id)
		}
	}
	for range b.traces {
		id := x.traces.pop()
		if t, ok := x.byTrace[id]; ok && t.seq == seq {
			delete(x.byTrace, id)
		}
	}
	for range b.keys {
		pos := x.servers.popped + 1
		srv := x.servers.pop()
		// the newest with its fold leaving means all with it left
		if h := srv.key.fold(); pos <= x.indexedServers && x.byKey[h] == pos {
			delete(x.byKey, h)
		}
	}
	x.indexedServers = max(x.indexedServers, x.servers.popped)
	for range b.finals {
		x.finals.pop()
	}
	x.entries -= b.spans
}

// final returns the final trace ID number fi of the live release seq.
func (x *releasedIndex) final(seq, fi uint32) pcommon.TraceID {
	// Releases are numbered without gaps, so a release is found by its
	// distance from the oldest live one.
	b := x.batches.at(int(seq - uint32(x.batches.at(0).seq)))
	return x.finals.at(int(b.finalsBase-x.finals.popped) + int(fi))
}

// ambiguousFinal marks a span ID released with two different final trace
// IDs: a late child of it cannot tell which is its parent.
const ambiguousFinal = ^uint32(0)

// catchUp indexes the spans of the live releases not indexed yet, oldest
// first (so a span ID released again merges as it would have eagerly).
func (x *releasedIndex) catchUp() {
	if x.batches.len() == 0 {
		x.indexedSeq = x.nextSeq
		return
	}
	oldest := x.batches.at(0).seq
	for seq := max(x.indexedSeq+1, oldest); seq <= x.nextSeq; seq++ {
		b := x.batches.at(int(seq - oldest))
		for p := b.spansBase; p < b.spansBase+uint64(b.spans); p++ {
			l := x.spans.at(int(p - x.spans.popped))
			x.bySpan[l.id] = x.merged(&l, uint32(seq))
		}
	}
	x.indexedSeq = x.nextSeq
}

// merged is the entry for a logged span of release seq. A span ID released
// again (duplicate span IDs, Zipkin's shared client/server IDs) keeps one
// entry when the final trace is the same; different final traces make the
// ID ambiguous. The entry lives as long as the newest release of the ID.
func (x *releasedIndex) merged(l *loggedSpan, seq uint32) indexedSpan {
	e := indexedSpan{seq: seq, final: l.final}
	old, ok := x.bySpan[l.id]
	if !ok {
		return e
	}
	if old.final == ambiguousFinal || x.final(old.seq, old.final) != x.final(seq, l.final) {
		return indexedSpan{seq: seq, final: ambiguousFinal}
	}
	return e
}

func (x *releasedIndex) span(id pcommon.SpanID) (releasedSpan, bool) {
	if x.indexedSeq != x.nextSeq {
		x.catchUp()
	}
	s, ok := x.bySpan[id]
	if !ok {
		return releasedSpan{}, false
	}
	if s.final == ambiguousFinal {
		return releasedSpan{ambiguous: true}, true
	}
	return releasedSpan{traceID: x.final(s.seq, s.final)}, true
}

func (x *releasedIndex) trace(id pcommon.TraceID) (pcommon.TraceID, bool) {
	t, ok := x.byTrace[id]
	if !ok {
		return pcommon.TraceID{}, false
	}
	return x.final(t.seq, t.final), true
}

// ingress appends the released ingress spans with request ID key to out,
// newest first.
func (x *releasedIndex) ingress(key reqKey, out []releasedServer) []releasedServer {
	// Index the servers logged since the last lookup, oldest first. The
	// spans of a request come one after the other: a run of one key reads
	// and writes the map once.
	var runKey, runPos uint64
	for ; x.indexedServers < x.servers.pushed; x.indexedServers++ {
		srv := x.servers.ptr(int(x.indexedServers - x.servers.popped))
		h := srv.key.fold()
		switch {
		case runPos != 0 && h == runKey:
			srv.prev = runPos
		default:
			if runPos != 0 {
				x.byKey[runKey] = runPos
			}
			srv.prev, runKey = x.byKey[h], h
		}
		runPos = x.indexedServers + 1
	}
	if runPos != 0 {
		x.byKey[runKey] = runPos
	}
	for pos := x.byKey[key.fold()]; pos > x.servers.popped; {
		srv := x.servers.at(int(pos - 1 - x.servers.popped))
		if srv.key == key {
			out = append(out, srv.releasedServer)
		}
		pos = srv.prev
	}
	return out
}
