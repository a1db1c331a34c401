package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"
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

	// unit bookkeeping, valid on the root group only.
	parent    *group
	spans     int
	firstSeen int64 // ns on the buffer's clock
	lastSeen  int64
	// met is what only groups that met another have (most never do).
	met      *groupMet
	ref      uint32 // handle in the buffer's indexes
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
// same request. It is not safe for concurrent use; the processor locks it
// (batches are split before, with the immutable reader and the
// self-locking service table only).
type buffer struct {
	wait, maxWait time.Duration
	maxSpans      int
	reader        recReader

	groups map[pcommon.TraceID]*group
	// bySpanID: groups holding a span with this ID.
	bySpanID multiIndex
	// byParent: groups holding a span whose parent was not in its own group
	// when it arrived (so the parent's group can find it).
	byParent multiIndex
	// byReqKey: groups holding a span with this request ID (by its 64-bit
	// fold: a collision only gathers more, the stitcher compares whole keys).
	byReqKey multiIndex
	refs     groupRefs
	names    *serviceTable

	due deadlineQueue
	// epoch is the origin of the buffer's nanosecond clock (monotonic when
	// the caller's times are).
	epoch time.Time
	fifo  []*group // groups in creation order, for eviction
	head  int
	// groupSeq numbers groups in creation order.
	groupSeq uint64

	spans int

	// scratch, reused under the lock to keep the hot path allocation-free
	seenSpan map[pcommon.SpanID]struct{}
	seenKey  map[uint64]struct{}
	recs     slicePool[heldRec]
	exts     slicePool[heldExt]

	// touched keeps the loads of idTable.touch from being optimized away.
	touched uint32

	// gatherAlways turns off both release shortcuts (groups that never met
	// another, and following only shared keys): every release then follows
	// every key of every span. Tests compare both ways.
	gatherAlways bool
}

func newBuffer(cfg *Config) *buffer {
	names := newServiceTable()
	b := &buffer{
		epoch:    time.Now(),
		names:    names,
		wait:     cfg.WaitDuration,
		maxWait:  cfg.MaxWait,
		maxSpans: cfg.MaxBufferedSpans,
		reader:   newRecReader(cfg),
		groups:   make(map[pcommon.TraceID]*group),
		seenSpan: make(map[pcommon.SpanID]struct{}),
		seenKey:  make(map[uint64]struct{}),
	}
	b.bySpanID = newMultiIndex(&b.refs)
	b.byParent = newMultiIndex(&b.refs)
	b.byReqKey = newMultiIndex(&b.refs)
	return b
}

type addStats struct {
	spans          int
	invalidRequest int
}

// batchSplit is an incoming batch regrouped by trace ID. It is built before
// the buffer lock is taken: the pdata moves and attribute reads of a batch
// run concurrently with other batches and with releases, and the lock only
// covers handing the fragments to their groups.
type batchSplit struct {
	frags []fragment
	recs  []spanRec // in batch order
	frag  []int32   // fragment of each record
	st    addStats
	// markEpoch is the service table's mark count when the split began:
	// a service marked since may have SERVER spans here left unread.
	markEpoch uint64

	// scratch
	byTrace map[pcommon.TraceID]int32
	groups  []*group
	// stamp of the current source scope (see fragment)
	ssStamp uint64
}

// fragment holds the spans of one trace ID of a batch.
type fragment struct {
	traceID pcommon.TraceID
	parts   []part
	pending int32 // spans of the current scope not yet moved
	spans   int32
	withKey int32 // spans with a request ID
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
	sp.markEpoch = names.markEpoch.Load()
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		resAttrs := rs.Resource().Attributes()
		service := names.intern(serviceName(resAttrs))
		identity := reader.identityOf(resAttrs)
		readServer := names.marked(service)
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
				rec, invalid := reader.read(spans.At(k), identity, service, readServer)
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
				if !rec.reqKey.empty() {
					sp.frags[f].withKey++
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
	sp.st = addStats{}
	clear(sp.byTrace)
	return true
}

// add hands the fragments of a split batch to the groups of their trace
// IDs. A fragment's spans and records are in batch order, so a group's
// records stay in the order of its spans.
func (b *buffer) add(sp *batchSplit, wall time.Time) addStats {
	now := b.clock(wall)
	for _, f := range sp.frags {
		g, ok := b.groups[f.traceID]
		if !ok {
			g = b.newGroup(f.traceID, f.parts, now)
		} else {
			g.parts = append(g.parts, f.parts...)
		}
		sp.groups = append(sp.groups, g)
	}
	var touched uint32
	for i := range sp.recs {
		touched ^= b.bySpanID.one.touch(spanKey(sp.recs[i].spanID)) ^ b.bySpanID.one.touch(spanKey(sp.recs[i].parentID))
	}
	b.touched ^= touched
	newlyMarked := b.markOrphanServices(sp.recs)
	// room for each fragment's records at once: a group's records grow
	// to their size class in one step, not by doubling
	for f, fr := range sp.frags {
		g := sp.groups[f]
		g.recs = b.recs.reserve(g.recs, int(fr.spans))
		g.ext = b.exts.reserve(g.ext, int(fr.withKey))
	}
	for i := range sp.recs {
		g := sp.groups[sp.frag[i]]
		b.hold(g, &sp.recs[i])
		r := g.root()
		r.spans++
		r.lastSeen = now
	}
	b.spans += sp.st.spans
	switch {
	case newlyMarked:
		// their SERVER spans buffered so far (this batch's too) were not read
		sp.st.invalidRequest += b.readMarkedServers(b.fifo[b.head:])
	case sp.markEpoch != b.names.markEpoch.Load():
		// marked by another batch while this one was read
		sp.st.invalidRequest += b.readMarkedServers(sp.groups)
	}
	return sp.st
}

// markOrphanServices marks the services of request-ID orphans (see
// serviceTable); it reports whether one was new.
func (b *buffer) markOrphanServices(recs []spanRec) bool {
	newly := false
	for i := range recs {
		if r := &recs[i]; r.requestIDOrphan() && b.names.mark(r.service) {
			newly = true
		}
	}
	return newly
}

// readMarkedServers reads the request IDs of the groups' SERVER spans that
// were left unread and whose service is now marked, and indexes them as
// hold would have. It returns the count of unusable request-ID attributes.
// Marks are rare (once per service), so walking the groups' pdata is too.
func (b *buffer) readMarkedServers(groups []*group) (invalid int) {
	for _, g := range groups {
		if g == nil || g.released || !g.hasUnreadMarked(b.names) {
			continue
		}
		i := 0
		for _, p := range g.parts {
			for _, span := range p.spans.All() {
				if i == len(g.recs) {
					return invalid // records and spans always match; never index past them
				}
				h := &g.recs[i]
				i++
				if !h.has(unreadServer) || !b.names.marked(h.service) {
					continue
				}
				rec, bad := b.reader.read(span, p.src.res.identity, h.service, true)
				if bad {
					invalid++
				}
				h.set(unreadServer, false)
				if !rec.reqKey.empty() {
					b.keepRequestID(g, h, &rec)
					b.indexRequestID(g, rec.reqKey)
				}
			}
		}
	}
	return invalid
}

// hasUnreadMarked reports whether some SERVER span of g was left unread
// and its service is marked now.
func (g *group) hasUnreadMarked(names *serviceTable) bool {
	for i := range g.recs {
		if h := &g.recs[i]; h.has(unreadServer) && names.marked(h.service) {
			return true
		}
	}
	return false
}

func (b *buffer) newGroup(tid pcommon.TraceID, parts []part, now int64) *group {
	b.groupSeq++
	g := &group{traceID: tid, seq: b.groupSeq, parts: parts, firstSeen: now, lastSeen: now}
	g.ref = b.refs.ref(g)
	b.groups[tid] = g
	b.fifo = append(b.fifo, g)
	b.due.push(deadlineEntry{at: b.deadline(g), g: g})
	return g
}

// clock converts a time to nanoseconds on the buffer's clock.
func (b *buffer) clock(t time.Time) int64 { return int64(t.Sub(b.epoch)) }

// heldRec is a buffered span's record as the buffer keeps it: the trace
// ID is the group's, and the request-ID fields are kept apart (heldExt)
// for the spans that have a request ID. See spanRec for the fields.
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
	// unreadServer: see spanRec.
	unreadServer
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

// hold keeps the record of a span moved into group g and indexes it.
func (b *buffer) hold(g *group, rec *spanRec) {
	h := heldRec{spanID: rec.spanID, parentID: rec.parentID, service: rec.service, kind: uint8(rec.kind), ext: -1}
	h.set(unreadServer, rec.unreadServer)
	if !rec.reqKey.empty() {
		b.keepRequestID(g, &h, rec)
	}
	g.recs = b.recs.reserve(g.recs, 1) // room was made per fragment in add
	g.recs = append(g.recs, h)
	b.index(g, &g.recs[len(g.recs)-1], rec.reqKey)
}

// keepRequestID stores the request-ID fields of rec (which has a request
// ID) for g's held record h.
func (b *buffer) keepRequestID(g *group, h *heldRec, rec *spanRec) {
	g.ext = b.exts.reserve(g.ext, 1)
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

// index records the span's keys and notes every meeting with another
// group (see groupMet.links); each relation gather follows is noticed by
// whichever of its two ends arrives second.
func (b *buffer) index(g *group, rec *heldRec, key reqKey) {
	if id := rec.spanID; !id.IsEmpty() {
		k := spanKey(id)
		link(g, b.bySpanID.add(k, g), linkKey{id: id})
		// orphans that came before this span, waiting for it as their parent
		if w := b.byParent.first(k); w == g && !b.byParent.multi(k) {
			b.byParent.delete(k) // they are children within the group
		} else if w != nil {
			// the others waiting were linked to w when they came
			link(g, w, linkKey{id: id})
		}
	}
	if p := rec.parentID; !p.IsEmpty() && p != rec.spanID && !b.bySpanID.contains(spanKey(p), g) {
		k := spanKey(p)
		link(g, b.bySpanID.first(k), linkKey{id: p}) // a parent in another trace ID
		link(g, b.byParent.add(k, g), linkKey{id: p})
		rec.set(orphanAtIngest, true)
	}
	if !key.empty() {
		b.indexRequestID(g, key)
	}
}

// indexRequestID indexes a request ID of g and notes a meeting with
// another group holding it.
func (b *buffer) indexRequestID(g *group, key reqKey) {
	k := reqFold(key)
	link(g, b.byReqKey.add(k, g), linkKey{id: [8]byte(binary.LittleEndian.AppendUint64(nil, k)), req: true})
}

// reqFold is a request ID's key in the buffer's index: its 64-bit fold (a
// collision only gathers more; the stitcher compares whole keys), never 0.
func reqFold(k reqKey) uint64 { return max(k.hash64(), 1) }

// alone reports a unit of one group that never met another.
func (b *buffer) alone(r *group) bool {
	return r.met == nil && !b.gatherAlways
}

// link notes that two groups share a key.
func link(g, other *group, k linkKey) {
	if other == nil || other == g {
		return
	}
	for _, x := range [2]*group{g, other} {
		m := x.meet()
		if n := len(m.links); n == 0 || m.links[n-1] != k {
			m.links = append(m.links, k)
		}
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
	return min(r.lastSeen+int64(b.wait), r.firstSeen+int64(b.maxWait))
}

// releaseDue detaches the units whose deadline has passed into rel.
func (b *buffer) releaseDue(rel *release) {
	now := b.clock(rel.now)
	for len(b.due) > 0 && b.due[0].at <= now {
		g := b.due.pop().g
		if g.released || g.parent != nil {
			continue // released or merged into another unit
		}
		if d := b.deadline(g); d > now {
			b.due.push(deadlineEntry{at: d, g: g})
			continue
		}
		r := b.gather(g)
		if d := b.deadline(r); d > now {
			// A fragment of the same request is still fresh: wait for it.
			b.due.push(deadlineEntry{at: d, g: r})
			continue
		}
		b.detach(r, rel)
	}
}

// evictOverCapacity detaches the oldest units into rel until the buffer is
// within max_buffered_spans.
func (b *buffer) evictOverCapacity(rel *release) {
	for b.spans > b.maxSpans && b.head < len(b.fifo) {
		g := b.fifo[b.head]
		b.fifo[b.head] = nil
		b.head++
		if g.released {
			continue
		}
		b.detach(b.gather(g.root()), rel)
	}
	b.compactFIFO()
}

// releaseAll detaches everything into rel, oldest first (Shutdown).
func (b *buffer) releaseAll(rel *release) {
	for ; b.head < len(b.fifo); b.head++ {
		g := b.fifo[b.head]
		b.fifo[b.head] = nil
		if !g.released {
			b.detach(b.gather(g.root()), rel)
		}
	}
	b.compactFIFO()
	b.due = b.due[:0]
}

func (b *buffer) compactFIFO() {
	if b.head > 1024 && b.head > len(b.fifo)/2 {
		n := copy(b.fifo, b.fifo[b.head:])
		clear(b.fifo[n:])
		b.fifo = b.fifo[:n]
		b.head = 0
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
		if b.bySpanID.multi(k) || b.byParent.multi(k) {
			if _, seen := seenSpan[id]; seen {
				return
			}
			seenSpan[id] = struct{}{}
		}
		b.bySpanID.each(k, follow)
		b.byParent.each(k, follow)
	}
	byReq := func(k uint64) {
		if b.byReqKey.multi(k) {
			if _, seen := seenKey[k]; seen {
				return
			}
			seenKey[k] = struct{}{}
		}
		b.byReqKey.each(k, follow)
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
	r.spans += o.spans
	r.firstSeen = min(r.firstSeen, o.firstSeen)
	r.lastSeen = max(r.lastSeen, o.lastSeen)
}

// detach removes unit r from the buffer and its indexes and adds it to
// rel, to be stitched outside the buffer lock (see stitchStage); its
// groups keep their records until then.
func (b *buffer) detach(r *group, rel *release) {
	u := &unit{groups: r.members(), spans: r.spans}
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
		if b.groups[m.traceID] == m {
			delete(b.groups, m.traceID)
		}
		for i := range m.recs {
			touched ^= b.bySpanID.one.touch(spanKey(m.recs[i].spanID))
		}
	}
	b.touched ^= touched
	// gather followed every key of these spans, so whole keys can go, except
	// byParent lists of a span's parent, which other units may share.
	alone := b.alone(r)
	for _, m := range u.groups {
		for i := range m.recs {
			h := &m.recs[i]
			if k := spanKey(h.spanID); k != 0 {
				b.bySpanID.delete(k)
				if !alone { // else no other group's orphan waits for this span
					b.byParent.delete(k)
				}
			}
			if key := m.reqKeyOf(h); !key.empty() {
				b.byReqKey.delete(reqFold(key))
			}
			if h.has(orphanAtIngest) {
				b.byParent.dropReleased(spanKey(h.parentID))
			}
		}
	}
	// no index names these groups any more
	for _, m := range u.groups {
		b.refs.release(m.ref)
	}
	b.spans -= u.spans
	rel.units = append(rel.units, u)
}

// recycle takes back the record slices of stitched units.
func (b *buffer) recycle(units []*unit) {
	for _, u := range units {
		for _, m := range u.groups {
			b.recs.put(m.recs)
			b.exts.put(m.ext)
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

const poolMax = 1 << 17 // at most this many pooled elements per pool

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
	if k == len(poolCaps) || poolCaps[k] != c || p.pooled+c > poolMax {
		return
	}
	p.free[k] = append(p.free[k], s[:0])
	p.pooled += c
}

type deadlineEntry struct {
	at int64
	g  *group
}

// deadlineQueue is a min-heap of unit deadlines: one ticker serves all
// traces instead of a timer per trace.
type deadlineQueue []deadlineEntry

func (q *deadlineQueue) push(e deadlineEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if h[p].at <= h[i].at {
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
		if l < n && h[l].at < h[m].at {
			m = l
		}
		if r := l + 1; r < n && h[r].at < h[m].at {
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
