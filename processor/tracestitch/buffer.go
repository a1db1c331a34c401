package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"cmp"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// group holds the buffered spans of one trace ID. Groups that may belong to
// one request (linked by a parent span ID or a request ID) are merged into a
// unit with a union-find: the unit's root group carries the timing and the
// member list, and the unit is released as a whole.
type group struct {
	traceID pcommon.TraceID
	seq     uint64 // creation order
	parts   []part // the spans, in arrival order
	recs    []heldRec
	ext     []heldExt

	// unit bookkeeping, valid on the root group only. Adds update spans
	// and lastSeen under the lock of their own group's shard, and a
	// unit's root may be in another shard, hence atomics; the rest changes
	// only under the exclusive lock.
	parent    *group
	spans     atomic.Int64
	firstSeen int64        // ns on the buffer's clock
	lastSeen  atomic.Int64 // ns; only grows
	// met is what only groups that met another have (most never do).
	met      *groupMet
	ref      uint32 // handle in the buffer's indexes
	shard    uint8  // trace shard
	released bool
}

type groupMet struct {
	// members of a unit that merged, on its root (the root first).
	members []*group
	// links are the keys (span ID, parent, request ID) of this group that
	// were seen in another group, so releasing it must gather, following
	// these only. A group without links leaves alone without looking at
	// its indexes.
	links []linkKey
}

func (g *group) members() []*group {
	if g.met == nil {
		return nil
	}
	return g.met.members
}

func (g *group) links() []linkKey {
	if g.met == nil {
		return nil
	}
	return g.met.links
}

func (g *group) meet() *groupMet {
	if g.met == nil {
		g.met = &groupMet{}
	}
	return g.met
}

// linkKey is a key a group shares with another: a span ID (held, or
// awaited as a parent) or a request ID's 64-bit fold.
type linkKey struct {
	id  [8]byte
	req bool
}

// memberCount and member walk a unit root's groups; a unit that never
// merged is just its root (no slice allocated).
func (g *group) memberCount() int {
	if m := g.members(); m != nil {
		return len(m)
	}
	return 1
}

func (g *group) member(i int) *group {
	if m := g.members(); m != nil {
		return m[i]
	}
	return g
}

// root finds g's unit root, shortening the path (exclusive lock only).
func (g *group) root() *group {
	r := g
	for r.parent != nil {
		r = r.parent
	}
	for g.parent != nil && g.parent != r {
		g.parent, g = r, g.parent
	}
	return r
}

// findRoot finds g's unit root without changing anything, for adds,
// which hold the world lock shared: merges happen under the exclusive lock.
func (g *group) findRoot() *group {
	for g.parent != nil {
		g = g.parent
	}
	return g
}

// seenAfter records that a span of the unit arrived at now.
func (g *group) seenAfter(now int64) {
	for {
		last := g.lastSeen.Load()
		if now <= last || g.lastSeen.CompareAndSwap(last, now) {
			return
		}
	}
}

// unit is a set of groups released together.
type unit struct {
	groups     []*group
	groupSpans []int  // spans per group
	rewrite    []bool // per group: some span is rewritten (nil: none)
	result     stitchResult
	spans      int
	one        [1]*group // groups of a unit of one group, without allocating
	oneSpans   [1]int
}

// buffer is the per-trace buffer with the indexes that find fragments of the
// same request. Adds run concurrently: each holds the world lock shared and
// locks only the shards it touches, one at a time: the trace shards of its
// trace IDs (groups, deadlines, record pools) and the key shards of its
// span IDs, parents and request IDs (the indexes). Everything that takes
// units out (release, eviction, Shutdown) holds the world lock
// exclusively, and needs no shard lock then.
type buffer struct {
	wait, maxWait time.Duration
	maxSpans      int
	reader        recReader

	world  sync.RWMutex
	traces [traceShards]traceShard
	keys   [keyShards]keyShard
	refs   groupRefs
	names  *serviceTable
	// serving is the SERVER spans' time ranges by instance (own lock).
	serving *servingIndex
	// linkMu guards groups' met, by stripe: a link writes to two groups
	// that may belong to any shards.
	linkMu    [linkStripes]paddedMutex
	shardSeed uint64 // trace shards
	keySeed   uint64 // key shards

	// epoch is the origin of the buffer's nanosecond clock (monotonic when
	// the caller's times are).
	epoch time.Time
	// groupSeq numbers groups in creation order.
	groupSeq atomic.Uint64
	// spans buffered, counted when an add reserves room for its batch.
	spans atomic.Int64

	// retired holds stitched units until the next exclusive section takes
	// their records back (see retire).
	retiredMu sync.Mutex
	retired   []*unit

	// scratch of the exclusive sections
	seenSpan map[pcommon.SpanID]struct{}
	seenKey  map[uint64]struct{}
	// touched keeps the loads of idTable.touch from being optimized away.
	touched uint32

	// gatherAlways turns off both release shortcuts (groups that never met
	// another, and following only shared keys): every release then follows
	// every key of every span. Tests compare both ways.
	gatherAlways bool
}

func newBuffer(cfg *Config) *buffer {
	b := &buffer{
		epoch: time.Now(),
		names: newServiceTable(),
		// a fragment root is released within max_wait of its first span,
		// and late ones follow within late_span_ttl
		serving:   newServingIndex(int64(2*cfg.MaxWait+cfg.LateSpanTTL), cfg.MaxBufferedSpans+cfg.MaxIndexEntries),
		wait:      cfg.WaitDuration,
		maxWait:   cfg.MaxWait,
		maxSpans:  cfg.MaxBufferedSpans,
		reader:    newRecReader(cfg),
		shardSeed: rand.Uint64(),
		keySeed:   rand.Uint64(),
		seenSpan:  make(map[pcommon.SpanID]struct{}),
		seenKey:   make(map[uint64]struct{}),
	}
	for i := range b.traces {
		b.traces[i].groups = make(map[pcommon.TraceID]*group)
	}
	for i := range b.keys {
		k := &b.keys[i]
		k.bySpanID = newMultiIndex(&b.refs)
		k.byParent = newMultiIndex(&b.refs)
		k.byReqKey = newMultiIndex(&b.refs)
	}
	return b
}

type addStats struct {
	spans          int
	invalidRequest int
}

// batchSplit is an incoming batch regrouped by trace ID. It is built before
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
								res = &sourceResource{resource: pcommon.NewResource(), schemaURL: rs.SchemaUrl(), identity: identity}
								rs.Resource().MoveTo(res.resource)
							}
							src = &source{res: res, scope: pcommon.NewInstrumentationScope(), schemaURL: ss.SchemaUrl()}
							ss.Scope().MoveTo(src.scope)
						}
						dest := ptrace.NewSpanSlice()
						dest.EnsureCapacity(int(fr.pending))
						fr.parts = append(fr.parts, part{src: src, spans: dest})
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
	return true
}

// add hands the fragments of a split batch to the groups of their trace
// IDs and indexes their spans. The caller holds the world lock, shared or
// exclusive, and has counted the batch's spans in b.spans (see reserve). A
// fragment's spans and records are in batch order, so a group's records
// stay in the order of its spans.
//
// It runs in three steps, each taking its shards' locks one at a time:
// find or make the groups (trace shards), index the keys (key shards),
// then hand over the spans and records (trace shards). Operations on one
// key run in batch order under its shard's lock, so the indexes end up as
// if the batches had been added one after the other.
func (b *buffer) add(sp *batchSplit, wall time.Time) addStats {
	now := b.clock(wall)
	sp.sortByShard(b)
	// New groups are numbered in the order of their first span in the
	// batch, not in shard order, so that the order does not depend on the
	// shards' random seed (see detach).
	seq0 := b.groupSeq.Add(uint64(len(sp.frags))) - uint64(len(sp.frags))
	b.eachTraceShard(sp, func(s int, ts *traceShard, frags []int32) {
		for _, f := range frags {
			tid := sp.frags[f].traceID
			g, ok := ts.groups[tid]
			if !ok {
				g = b.newGroup(ts, uint8(s), seq0+uint64(f)+1, tid, now)
			}
			sp.groups[f] = g
		}
	})
	b.indexKeys(sp)
	b.serving.add(sp.recs, now)
	b.eachTraceShard(sp, func(s int, ts *traceShard, frags []int32) {
		// room for each fragment's records at once: a group's records grow
		// to their size class in one step, not by doubling
		for _, f := range frags {
			g, fr := sp.groups[f], &sp.frags[f]
			g.parts = append(g.parts, fr.parts...)
			g.recs = ts.recs.reserve(g.recs, int(fr.spans))
			g.ext = ts.exts.reserve(g.ext, int(fr.withExt))
		}
		for _, i := range sp.recOrder[sp.recStart[s]:sp.recStart[s+1]] {
			ts.hold(sp.groups[sp.frag[i]], &sp.recs[i], sp.orphan[i])
		}
		for _, f := range frags {
			r := sp.groups[f].findRoot()
			r.spans.Add(int64(sp.frags[f].spans))
			r.seenAfter(now)
		}
	})
	return sp.st
}

// eachTraceShard calls f, under each shard's lock, with the fragments of
// the split (sorted by sortByShard) that fall in it.
func (b *buffer) eachTraceShard(sp *batchSplit, f func(s int, ts *traceShard, frags []int32)) {
	for s := range traceShards {
		frags := sp.fragOrder[sp.fragStart[s]:sp.fragStart[s+1]]
		if len(frags) == 0 {
			continue
		}
		ts := &b.traces[s]
		ts.mu.Lock()
		f(s, ts, frags)
		ts.mu.Unlock()
	}
}

// reserve counts n more buffered spans if that keeps the buffer within
// max_buffered_spans, so that concurrent adds cannot overshoot it.
func (b *buffer) reserve(n int) bool {
	for {
		cur := b.spans.Load()
		if cur+int64(n) > int64(b.maxSpans) {
			return false
		}
		if b.spans.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// indexKeys indexes the keys of a split batch whose groups are known,
// shard by shard, and notes which spans are orphans (sp.orphan).
func (b *buffer) indexKeys(sp *batchSplit) {
	var lastKey reqKey
	lastFrag := int32(-1)
	for i := range sp.recs {
		rec := &sp.recs[i]
		if id := rec.spanID; !id.IsEmpty() {
			sp.addOp(b.keyShardOf(spanKey(id)), int32(i), opSpan)
		}
		if p := rec.parentID; !p.IsEmpty() && p != rec.spanID {
			sp.addOp(b.keyShardOf(spanKey(p)), int32(i), opParent)
		}
		// the spans of a request mostly share its request ID: one op per
		// run of a key in a fragment
		if key := rec.reqKey; !key.empty() && (key != lastKey || sp.frag[i] != lastFrag) {
			sp.addOp(b.keyShardOf(reqFold(key)), int32(i), opRequestID)
			lastKey, lastFrag = key, sp.frag[i]
		}
	}
	for s := range keyShards {
		ops := sp.ops[s]
		if len(ops) == 0 {
			continue
		}
		ks := &b.keys[s]
		ks.mu.Lock()
		// Touching the slots first lets their cache misses overlap.
		var touched uint32
		for _, op := range ops {
			switch rec := &sp.recs[op.rec]; op.what {
			case opSpan:
				touched ^= ks.bySpanID.one.touch(spanKey(rec.spanID))
			case opParent:
				touched ^= ks.bySpanID.one.touch(spanKey(rec.parentID))
			}
		}
		ks.touched ^= touched
		for _, op := range ops {
			g, rec := sp.groups[sp.frag[op.rec]], &sp.recs[op.rec]
			switch op.what {
			case opSpan:
				b.indexSpan(ks, g, rec.spanID)
			case opParent:
				sp.orphan[op.rec] = b.indexParent(ks, g, rec.parentID)
			case opRequestID:
				b.indexRequestID(ks, g, rec.reqKey)
			}
		}
		ks.mu.Unlock()
	}
}

// newGroup makes the group of tid in trace shard ts (its lock held).
func (b *buffer) newGroup(ts *traceShard, shard uint8, seq uint64, tid pcommon.TraceID, now int64) *group {
	g := &group{traceID: tid, seq: seq, firstSeen: now, shard: shard}
	g.lastSeen.Store(now)
	g.ref = b.refs.ref(g)
	ts.groups[tid] = g
	ts.fifo = append(ts.fifo, fifoEntry{seq: seq, g: g})
	ts.due.push(b.dueEntry(g))
	return g
}

// clock converts a time to nanoseconds on the buffer's clock.
func (b *buffer) clock(t time.Time) int64 { return int64(t.Sub(b.epoch)) }

// heldRec is a buffered span's record as the buffer keeps it: the trace
// ID is the group's, and the request-ID and instance fields are kept
// apart (heldExt) for the spans that have them. See spanRec for the fields.
// It is 24 bytes: every buffered span has one.
type heldRec struct {
	spanID, parentID pcommon.SpanID
	ext              int32 // index in group.ext, -1 for none
	service          serviceID
	kind             uint8 // ptrace.SpanKind
	flags            heldFlags
}

type heldFlags uint8

const (
	// orphanAtIngest: the parent was not in the span's group when the span
	// arrived, so the span is in the buffer's byParent index.
	orphanAtIngest heldFlags = 1 << iota
)

func (h *heldRec) has(f heldFlags) bool { return h.flags&f != 0 }

func (h *heldRec) set(f heldFlags, on bool) {
	if on {
		h.flags |= f
	} else {
		h.flags &^= f
	}
}

type heldExt struct {
	start, end pcommon.Timestamp
	instance   uint64
	reqKey     reqKey
}

// hold keeps the record of a span moved into group g of shard ts (its
// lock held); orphan: its parent was not in g when it was indexed.
func (ts *traceShard) hold(g *group, rec *spanRec, orphan bool) {
	h := heldRec{spanID: rec.spanID, parentID: rec.parentID, service: rec.service, kind: uint8(rec.kind), ext: -1}
	h.set(orphanAtIngest, orphan)
	if rec.hasExt() {
		ts.keepExt(g, &h, rec)
	}
	g.recs = ts.recs.reserve(g.recs, 1) // room was made per fragment in add
	g.recs = append(g.recs, h)
}

// keepExt stores the request ID and instance fields of rec for g's held
// record h.
func (ts *traceShard) keepExt(g *group, h *heldRec, rec *spanRec) {
	g.ext = ts.exts.reserve(g.ext, 1)
	h.ext = int32(len(g.ext))
	g.ext = append(g.ext, heldExt{start: rec.start, end: rec.end, instance: rec.instance, reqKey: rec.reqKey})
}

// expand appends the full records of group g to out.
func (g *group) expand(out []spanRec) []spanRec {
	for i := range g.recs {
		h := &g.recs[i]
		r := spanRec{traceID: g.traceID, spanID: h.spanID, parentID: h.parentID, kind: ptrace.SpanKind(h.kind), service: h.service}
		if h.ext >= 0 {
			e := &g.ext[h.ext]
			r.start, r.end, r.instance, r.reqKey = e.start, e.end, e.instance, e.reqKey
		}
		out = append(out, r)
	}
	return out
}

// reqKeyOf returns the request ID key of a held record.
func (g *group) reqKeyOf(h *heldRec) reqKey {
	if h.ext < 0 {
		return reqKey{}
	}
	return g.ext[h.ext].reqKey
}

// indexSpan, indexParent and indexRequestID record a span's keys in the
// key shard ks (its lock held) and note every meeting with another group
// (see groupMet.links); each relation gather follows is noticed by
// whichever of its two ends arrives second.

func (b *buffer) indexSpan(ks *keyShard, g *group, id pcommon.SpanID) {
	k := spanKey(id)
	b.link(g, ks.bySpanID.add(k, g), linkKey{id: id})
	// orphans that came before this span, waiting for it as their parent
	if w := ks.byParent.first(k); w == g && !ks.byParent.multi(k) {
		ks.byParent.delete(k) // they are children within the group
	} else if w != nil {
		// the others waiting were linked to w when they came
		b.link(g, w, linkKey{id: id})
	}
}

// indexParent indexes a span's parent p unless it is in g already, and
// reports whether it was not (the span is an orphan at ingest).
func (b *buffer) indexParent(ks *keyShard, g *group, p pcommon.SpanID) bool {
	k := spanKey(p)
	if ks.bySpanID.contains(k, g) {
		return false
	}
	b.link(g, ks.bySpanID.first(k), linkKey{id: p}) // a parent in another trace ID
	b.link(g, ks.byParent.add(k, g), linkKey{id: p})
	return true
}

// indexRequestID indexes a request ID of g.
func (b *buffer) indexRequestID(ks *keyShard, g *group, key reqKey) {
	k := reqFold(key)
	l := linkKey{req: true}
	binary.LittleEndian.PutUint64(l.id[:], k)
	b.link(g, ks.byReqKey.add(k, g), l)
}

// reqFold is a request ID's key in the buffer's index: its 64-bit fold (a
// collision only gathers more; the stitcher compares whole keys), never 0.
func reqFold(k reqKey) uint64 { return max(k.hash64(), 1) }

// alone reports a unit of one group that never met another.
func (b *buffer) alone(r *group) bool {
	return r.met == nil && !b.gatherAlways
}

// link notes that two groups share a key. The groups may be in any trace
// shards and other adds may link them at the same time, so each is
// written under its stripe of linkMu.
func (b *buffer) link(g, other *group, k linkKey) {
	if other == nil || other == g {
		return
	}
	for _, x := range [2]*group{g, other} {
		mu := &b.linkMu[x.seq%linkStripes]
		mu.Lock()
		m := x.meet()
		if n := len(m.links); n == 0 || m.links[n-1] != k {
			m.links = append(m.links, k)
		}
		mu.Unlock()
	}
}

// multiIndex maps a key to the groups holding it. Nearly always one group:
// its handle lives in an idTable, the rare others in a side map, so
// indexing a span allocates nothing and, while the side map is empty,
// costs one table operation.
type multiIndex struct {
	one  idTable
	more map[uint64][]*group
	refs *groupRefs
}

func newMultiIndex(refs *groupRefs) multiIndex {
	return multiIndex{one: newIDTable(), more: make(map[uint64][]*group), refs: refs}
}

// multi reports whether k has more than one group.
func (x *multiIndex) multi(k uint64) bool {
	if len(x.more) == 0 {
		return false
	}
	_, ok := x.more[k]
	return ok
}

// add adds g under k and returns the key's first group before (nil if k
// was new).
func (x *multiIndex) add(k uint64, g *group) *group {
	h, ok := x.one.add(k, g.ref)
	if !ok {
		return nil
	}
	first := x.refs.get(h)
	if first == g {
		return first
	}
	if more := x.more[k]; len(more) == 0 || more[len(more)-1] != g {
		x.more[k] = append(more, g)
	}
	return first
}

// first returns k's first group, nil if none.
func (x *multiIndex) first(k uint64) *group {
	if h, ok := x.one.get(k); ok {
		return x.refs.get(h)
	}
	return nil
}

func (x *multiIndex) contains(k uint64, g *group) bool {
	if first := x.first(k); first == nil {
		return false
	} else if first == g {
		return true
	}
	if len(x.more) == 0 {
		return false
	}
	for _, m := range x.more[k] {
		if m == g {
			return true
		}
	}
	return false
}

// each calls f for every group of k.
func (x *multiIndex) each(k uint64, f func(*group)) {
	first := x.first(k)
	if first == nil {
		return
	}
	f(first)
	if len(x.more) == 0 {
		return
	}
	for _, m := range x.more[k] {
		f(m)
	}
}

func (x *multiIndex) delete(k uint64) {
	x.one.del(k)
	if len(x.more) > 0 {
		delete(x.more, k)
	}
}

// dropReleased removes the released groups of k.
func (x *multiIndex) dropReleased(k uint64) {
	first := x.first(k)
	if first == nil {
		return
	}
	if !x.multi(k) {
		if first.released {
			x.one.del(k)
		}
		return
	}
	more := x.more[k]
	var keep []*group
	if !first.released {
		keep = append(keep, first)
	}
	for _, m := range more {
		if !m.released {
			keep = append(keep, m)
		}
	}
	x.delete(k)
	if len(keep) > 0 {
		x.one.add(k, keep[0].ref)
		if len(keep) > 1 {
			x.more[k] = keep[1:]
		}
	}
}

// deadline of a unit root: a quiet period after its newest span, capped at
// max_wait after its first.
func (b *buffer) deadline(r *group) int64 {
	return min(r.lastSeen.Load()+int64(b.wait), r.firstSeen+int64(b.maxWait))
}

func (b *buffer) dueEntry(g *group) deadlineEntry {
	return deadlineEntry{at: b.deadline(g), seq: g.seq, g: g}
}

// The functions below take units out of the buffer; they run under the
// exclusive lock.

// releaseDue detaches the units whose deadline has passed into rel, in
// deadline order over all trace shards.
func (b *buffer) releaseDue(rel *release) {
	now := b.clock(rel.now)
	for {
		ts := b.earliestDue()
		if ts == nil || ts.due[0].at > now {
			return
		}
		g := ts.due.pop().g
		if g.released || g.parent != nil {
			continue // released or merged into another unit
		}
		if d := b.deadline(g); d > now {
			ts.due.push(deadlineEntry{at: d, seq: g.seq, g: g})
			continue
		}
		r := b.gather(g)
		if d := b.deadline(r); d > now {
			// A fragment of the same request is still fresh: wait for it.
			b.traces[r.shard].due.push(deadlineEntry{at: d, seq: r.seq, g: r})
			continue
		}
		b.detach(r, rel)
	}
}

// earliestDue is the trace shard with the earliest deadline, nil if none.
func (b *buffer) earliestDue() *traceShard {
	var first *traceShard
	for s := range b.traces {
		ts := &b.traces[s]
		if len(ts.due) > 0 && (first == nil || ts.due[0].before(first.due[0])) {
			first = ts
		}
	}
	return first
}

// oldest is the trace shard whose next group in creation order is the
// oldest, nil if all are empty.
func (b *buffer) oldest() *traceShard {
	var first *traceShard
	for s := range b.traces {
		ts := &b.traces[s]
		if ts.head < len(ts.fifo) && (first == nil || ts.fifo[ts.head].seq < first.fifo[first.head].seq) {
			first = ts
		}
	}
	return first
}

// detachOldest takes the oldest group off the queues and detaches its
// unit into rel, unless it left already; false when the queues are empty.
func (b *buffer) detachOldest(rel *release) bool {
	ts := b.oldest()
	if ts == nil {
		return false
	}
	if g := ts.next(); !g.released {
		b.detach(b.gather(g.root()), rel)
	}
	return true
}

// evictOverCapacity detaches the oldest units into rel until the buffer is
// within max_buffered_spans.
func (b *buffer) evictOverCapacity(rel *release) {
	for b.spans.Load() > int64(b.maxSpans) && b.detachOldest(rel) {
	}
	b.compactFIFOs()
}

// releaseAll detaches everything into rel, oldest first (Shutdown).
func (b *buffer) releaseAll(rel *release) {
	for b.detachOldest(rel) {
	}
	b.compactFIFOs()
	for s := range b.traces {
		ts := &b.traces[s]
		clear(ts.due)
		ts.due = ts.due[:0]
	}
}

func (b *buffer) compactFIFOs() {
	for s := range b.traces {
		b.traces[s].compactFIFO()
	}
}

// gather merges every buffered group that may belong to the same request as
// root r into r's unit and returns the unit's root. Links: the parent span
// of a span, other spans with the same span ID, spans whose parent is a
// span of the unit, and spans with the same request ID. A key held by
// several groups is followed once, so a hot request ID costs O(spans), not
// O(spans²).
func (b *buffer) gather(r *group) *group {
	if b.alone(r) {
		return r
	}
	seenSpan, seenKey := b.seenSpan, b.seenKey
	defer clear(seenSpan)
	defer clear(seenKey)
	follow := func(g *group) {
		if o := g.root(); o != r {
			b.merge(r, o)
		}
	}
	bySpan := func(id pcommon.SpanID) {
		k := spanKey(id)
		ks := b.keyShard(k)
		if ks.bySpanID.multi(k) || ks.byParent.multi(k) {
			if _, seen := seenSpan[id]; seen {
				return
			}
			seenSpan[id] = struct{}{}
		}
		ks.bySpanID.each(k, follow)
		ks.byParent.each(k, follow)
	}
	byReq := func(k uint64) {
		ks := b.keyShard(k)
		if ks.byReqKey.multi(k) {
			if _, seen := seenKey[k]; seen {
				return
			}
			seenKey[k] = struct{}{}
		}
		ks.byReqKey.each(k, follow)
	}
	if !b.gatherAlways {
		// Every key a member shares with another group was noted when the
		// second one came (index): following those finds the same groups
		// as following every key of every span (FuzzStitch compares both).
		for mi := 0; mi < r.memberCount(); mi++ {
			for _, k := range r.member(mi).links() {
				if k.req {
					byReq(binary.LittleEndian.Uint64(k.id[:]))
				} else {
					bySpan(pcommon.SpanID(k.id))
				}
			}
		}
		return r
	}
	for mi := 0; mi < r.memberCount(); mi++ {
		m := r.member(mi)
		for ri := range m.recs {
			rec := &m.recs[ri]
			if !rec.spanID.IsEmpty() {
				bySpan(rec.spanID)
			}
			// A parent that was in the group when the span came is a record
			// of the unit: its own span ID leads to its group and siblings.
			if rec.has(orphanAtIngest) {
				bySpan(rec.parentID)
			}
			if key := m.reqKeyOf(rec); !key.empty() {
				byReq(reqFold(key))
			}
		}
	}
	return r
}

// merge folds unit o into unit r.
func (b *buffer) merge(r, o *group) {
	o.parent = r
	rm := r.meet()
	if rm.members == nil {
		rm.members = []*group{r}
	}
	if om := o.members(); om == nil {
		rm.members = append(rm.members, o)
	} else {
		rm.members = append(rm.members, om...)
		o.met.members = nil
	}
	r.spans.Add(o.spans.Load())
	r.firstSeen = min(r.firstSeen, o.firstSeen)
	r.seenAfter(o.lastSeen.Load())
}

// detach removes unit r from the buffer and its indexes and adds it to
// rel, to be stitched outside the buffer lock (see stitchStage); its
// groups keep their records until then.
func (b *buffer) detach(r *group, rel *release) {
	u := &unit{groups: r.members(), spans: int(r.spans.Load())}
	if u.groups == nil {
		u.one[0] = r
		u.groups = u.one[:]
	}
	u.groupSpans = u.oneSpans[:]
	if len(u.groups) > 1 {
		u.groupSpans = make([]int, len(u.groups))
		// The stitch does not depend on the order gather met the groups
		// in (where a malformed input leaves a choice, e.g. which edge of
		// a parent cycle is cut): records go in creation order.
		slices.SortFunc(u.groups, func(a, b *group) int { return cmp.Compare(a.seq, b.seq) })
	}
	var touched uint32
	for k, m := range u.groups {
		u.groupSpans[k] = len(m.recs)
		m.released = true
		if ts := &b.traces[m.shard]; ts.groups[m.traceID] == m {
			delete(ts.groups, m.traceID)
		}
		for i := range m.recs {
			k := spanKey(m.recs[i].spanID)
			touched ^= b.keyShard(k).bySpanID.one.touch(k)
		}
	}
	b.touched ^= touched
	// gather followed every key of these spans, so whole keys can go, except
	// byParent lists of a span's parent, which other units may share.
	alone := b.alone(r)
	var lastKey reqKey // a whole key goes at once: once per run of it
	for _, m := range u.groups {
		for i := range m.recs {
			h := &m.recs[i]
			if k := spanKey(h.spanID); k != 0 {
				ks := b.keyShard(k)
				ks.bySpanID.delete(k)
				if !alone { // else no other group's orphan waits for this span
					ks.byParent.delete(k)
				}
			}
			if key := m.reqKeyOf(h); !key.empty() && key != lastKey {
				k := reqFold(key)
				b.keyShard(k).byReqKey.delete(k)
				lastKey = key
			}
			if h.has(orphanAtIngest) {
				k := spanKey(h.parentID)
				b.keyShard(k).byParent.dropReleased(k)
			}
		}
	}
	// no index names these groups any more
	for _, m := range u.groups {
		b.refs.release(m.ref)
	}
	b.spans.Add(-int64(u.spans))
	rel.units = append(rel.units, u)
}

// lockExclusive takes the world lock exclusively and first takes back the
// records of retired units.
func (b *buffer) lockExclusive() {
	b.world.Lock()
	b.recycleRetired()
}

// retire hands stitched units back; the next exclusive section takes
// their records back (see lockExclusive), so that a release does not take
// the exclusive lock a second time.
func (b *buffer) retire(units []*unit) {
	if len(units) == 0 {
		return
	}
	b.retiredMu.Lock()
	b.retired = append(b.retired, units...)
	b.retiredMu.Unlock()
}

// recycleRetired puts the record slices of retired units back into their
// shards' pools (under the exclusive lock, see lockExclusive).
func (b *buffer) recycleRetired() {
	b.retiredMu.Lock()
	units := b.retired
	b.retired = nil
	b.retiredMu.Unlock()
	for _, u := range units {
		for _, m := range u.groups {
			ts := &b.traces[m.shard]
			ts.recs.put(m.recs)
			ts.exts.put(m.ext)
			m.recs, m.ext = nil, nil
		}
	}
}

// slicePool recycles the record slices of released groups: records are the
// buffer's own per-span memory, and reusing it keeps a steady flow from
// allocating (and the garbage collector from sweeping) it again. Slices
// come in size classes four per doubling (at most 25% unused room, which
// is memory every buffered span pays), pooled up to a bounded total.
type slicePool[T any] struct {
	free   [len(poolCaps)][][]T
	pooled int // elements held
}

// poolCaps are the pooled capacities: every count up to 8, then four
// classes per doubling up to 4096.
var poolCaps = [...]int{
	1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64,
	80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
	1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
}

// poolMax bounds the scratch slices kept; the record pools, one per trace
// shard, share it: a shard pools at most poolMax/traceShards elements.
const poolMax = 1 << 17

// poolClass is the smallest class holding n elements, len(poolCaps) if none.
func poolClass(n int) int {
	k, _ := slices.BinarySearch(poolCaps[:], n)
	return k
}

// get returns an empty slice with room for at least n elements.
func (p *slicePool[T]) get(n int) []T {
	k := poolClass(n)
	if k == len(poolCaps) {
		return make([]T, 0, n)
	}
	if l := len(p.free[k]); l > 0 {
		s := p.free[k][l-1]
		p.free[k][l-1] = nil
		p.free[k] = p.free[k][:l-1]
		p.pooled -= cap(s)
		return s
	}
	return make([]T, 0, poolCaps[k])
}

// reserve returns s with room for extra more elements, recycling s when
// it moves. Growing by at least a quarter keeps a long trace arriving in
// many small batches from copying its records once per batch.
func (p *slicePool[T]) reserve(s []T, extra int) []T {
	if cap(s)-len(s) >= extra {
		return s
	}
	g := p.get(max(len(s)+extra, len(s)+len(s)/4))
	g = append(g, s...)
	p.put(s)
	return g
}

func (p *slicePool[T]) put(s []T) {
	c := cap(s)
	k := poolClass(c)
	if k == len(poolCaps) || poolCaps[k] != c || p.pooled+c > poolMax/traceShards {
		return
	}
	p.free[k] = append(p.free[k], s[:0])
	p.pooled += c
}

// deadlineEntry is a unit root's deadline; seq breaks ties, so that the
// order of a release's units does not depend on the shards.
type deadlineEntry struct {
	at  int64
	seq uint64
	g   *group
}

func (e deadlineEntry) before(o deadlineEntry) bool {
	return e.at < o.at || e.at == o.at && e.seq < o.seq
}

// deadlineQueue is a min-heap of unit deadlines: one ticker serves all
// traces instead of a timer per trace.
type deadlineQueue []deadlineEntry

func (q *deadlineQueue) push(e deadlineEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			break
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (q *deadlineQueue) pop() deadlineEntry {
	h := *q
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = deadlineEntry{}
	h = h[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && h[l].before(h[m]) {
			m = l
		}
		if r := l + 1; r < n && h[r].before(h[m]) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}
