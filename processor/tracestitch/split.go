// Batch splitting: an incoming batch regrouped by trace ID and read into records, before any lock.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
) // batchSplit is an incoming batch regrouped by trace ID. It is built before
// any lock is taken: the pdata moves and attribute reads of a batch run
// concurrently with other batches and with releases; the shard locks only
// cover handing the fragments to their groups and indexing their keys.
type batchSplit struct {
	frags []fragment
	recs  []spanRec // in batch order
	frag  []int32   // fragment of each record
	st    addStats

	// scratch
	byTrace map[pcommon.TraceID]int32
	groups  []*group // of each fragment
	// add's order by shard (see sortByShard)
	fragOrder, recOrder []int32
	fragStart, recStart [traceShards + 1]int32
	ops                 [keyShards][]keyOp
	orphan              []bool // of each record
	// stamp of the current source scope (see fragment)
	ssStamp uint64
	sources batchSources
}

// fragment holds the spans of one trace ID of a batch.
type fragment struct {
	traceID pcommon.TraceID
	parts   []part
	pending int32 // spans of the current scope not yet moved
	spans   int32
	withExt int32 // spans with a heldExt
	shard   uint8 // trace shard, set by sortByShard
	// ssStamp: the last part is of the current source scope when this is
	// the split's
	ssStamp uint64
}

// part is spans of one trace ID that arrived under one resource and scope.
// Buffered spans share their batch's resource and scope (source) instead
// of each trace's fragment holding copies: those copies (a ResourceSpans
// and a ScopeSpans with their attributes) weigh more than a span when a
// batch carries a span or two of each of many traces. The copies are made
// at release, for the spans that leave together.
type part struct {
	src   *source
	spans ptrace.SpanSlice
}

// source is the resource and scope a batch's spans arrived under, taken
// out of the batch (moved, not copied).
type source struct {
	res       *sourceResource
	scope     pcommon.InstrumentationScope
	schemaURL string
}

type sourceResource struct {
	resource  pcommon.Resource
	schemaURL string
	identity  resourceIdentity
}

var splitPool = sync.Pool{New: func() any {
	return &batchSplit{byTrace: make(map[pcommon.TraceID]int32)}
}}

// split moves every span of td into a fragment of its trace ID and reads
// its record; td's resources and scopes are moved out into sources that
// the fragments share (see part). It needs no lock: the reader is
// immutable and the service table locks itself.
func (sp *batchSplit) split(td ptrace.Traces, reader *recReader, names *serviceTable) {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		resAttrs := rs.Resource().Attributes()
		service := names.intern(serviceName(resAttrs))
		identity := reader.identityOf(resAttrs)
		var res *sourceResource // taken out of the batch if a span needs it
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			last := int32(-1)
			var lastDest ptrace.SpanSlice
			var src *source
			sp.ssStamp++
			spans := ss.Spans()
			// First the records and each span's fragment, counting the spans
			// per fragment so that each destination is allocated once.
			base := len(sp.recs)
			prevF := int32(-1)
			for k := 0; k < spans.Len(); k++ {
				rec, invalid := reader.read(spans.At(k), identity, service)
				if invalid {
					sp.st.invalidRequest++
				}
				f := prevF
				if f < 0 || rec.traceID != sp.frags[f].traceID { // runs of one trace are common
					var ok bool
					if f, ok = sp.byTrace[rec.traceID]; !ok {
						f = int32(len(sp.frags))
						sp.frags = append(sp.frags, fragment{traceID: rec.traceID})
						sp.byTrace[rec.traceID] = f
					}
					prevF = f
				}
				sp.frags[f].pending++
				sp.frags[f].spans++
				if rec.hasExt() {
					sp.frags[f].withExt++
				}
				sp.recs = append(sp.recs, rec)
				sp.frag = append(sp.frag, f)
				sp.st.spans++
			}
			for k := 0; k < spans.Len(); k++ {
				span := spans.At(k)
				f := sp.frag[base+k]
				if f != last {
					fr := &sp.frags[f]
					if fr.ssStamp != sp.ssStamp {
						if src == nil {
							if res == nil {
								res = sp.sources.resource(rs, identity)
							}
							src = sp.sources.source(res, ss)
						}
						// A run under a source equal to the fragment's last one
						// (a batch that repeats resources) joins its part.
						if n := len(fr.parts); n == 0 || fr.parts[n-1].src != src {
							dest := ptrace.NewSpanSlice()
							dest.EnsureCapacity(int(fr.pending))
							fr.parts = append(fr.parts, part{src: src, spans: dest})
						}
						fr.pending = 0
						fr.ssStamp = sp.ssStamp
					}
					last, lastDest = f, fr.parts[len(fr.parts)-1].spans
				}
				span.MoveTo(lastDest.AppendEmpty())
			}
		}
	}
}

// reset readies the split for reuse; a huge one is not kept.
func (sp *batchSplit) reset() bool {
	if cap(sp.recs) > poolMax {
		return false
	}
	clear(sp.frags)
	clear(sp.groups)
	sp.frags, sp.recs, sp.frag, sp.groups = sp.frags[:0], sp.recs[:0], sp.frag[:0], sp.groups[:0]
	for s := range sp.ops {
		sp.ops[s] = sp.ops[s][:0]
	}
	sp.st = addStats{}
	clear(sp.byTrace)
	sp.sources.reset()
	return true
}

// keyOp is an index operation of a split batch's record on one key.
type keyOp struct {
	rec  int32
	what keyOpKind
}

type keyOpKind uint8

const (
	opSpan keyOpKind = iota
	opParent
	opRequestID
)

func (sp *batchSplit) addOp(shard int, rec int32, what keyOpKind) {
	sp.ops[shard] = append(sp.ops[shard], keyOp{rec: rec, what: what})
}

// sortByShard orders the split's fragments and records by trace shard
// (stably: a group's records keep their order) and sizes the scratch of
// add.
func (sp *batchSplit) sortByShard(b *buffer) {
	nf, nr := len(sp.frags), len(sp.recs)
	sp.fragOrder = grow(sp.fragOrder, nf)
	sp.recOrder = grow(sp.recOrder, nr)
	sp.orphan = grow(sp.orphan, nr)
	sp.groups = grow(sp.groups, nf)
	var fc, rc [traceShards + 1]int32
	for f := range sp.frags {
		fr := &sp.frags[f]
		fr.shard = uint8(b.traceShardOf(fr.traceID))
		fc[fr.shard+1]++
		rc[fr.shard+1] += fr.spans
	}
	for s := range traceShards {
		fc[s+1] += fc[s]
		rc[s+1] += rc[s]
	}
	sp.fragStart, sp.recStart = fc, rc
	for f := range sp.frags {
		s := sp.frags[f].shard
		sp.fragOrder[fc[s]] = int32(f)
		fc[s]++
	}
	for i, f := range sp.frag {
		s := sp.frags[f].shard
		sp.recOrder[rc[s]] = int32(i)
		rc[s]++
	}
}
