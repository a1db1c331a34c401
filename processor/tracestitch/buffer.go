package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"container/heap"
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
	td      ptrace.Traces
	recs    []spanRec

	// unit bookkeeping, valid on the root group only.
	parent    *group
	members   []*group
	spans     int
	firstSeen time.Time
	lastSeen  time.Time
	released  bool
}

// memberCount and member walk a unit root's groups; a unit that never
// merged is just its root (no slice allocated).
func (g *group) memberCount() int {
	if g.members == nil {
		return 1
	}
	return len(g.members)
}

func (g *group) member(i int) *group {
	if g.members == nil {
		return g
	}
	return g.members[i]
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
	groups []*group
	recs   []spanRec
	result stitchResult
	spans  int
}

// buffer is the per-trace buffer with the indexes that find fragments of the
// same request. It is not safe for concurrent use; the processor locks it.
type buffer struct {
	wait, maxWait time.Duration
	maxSpans      int
	reader        recReader
	stitchOpts    stitchOptions
	stitcher      *stitcher
	released      *releasedIndex

	groups map[pcommon.TraceID]*group
	// bySpanID: groups holding a span with this ID.
	bySpanID multiIndex[pcommon.SpanID]
	// byParent: groups holding a span whose parent was not in its own group
	// when it arrived (so the parent's group can find it).
	byParent multiIndex[pcommon.SpanID]
	// byReqKey: groups holding a span with this request ID (by its 64-bit
	// fold: a collision only gathers more, the stitcher compares whole keys).
	byReqKey multiIndex[uint64]
	names    *serviceTable

	due  deadlineQueue
	fifo []*group // groups in creation order, for eviction
	head int

	spans int

	// scratch, reused under the lock to keep the hot path allocation-free
	rsDests  map[*group]ptrace.ResourceSpans
	ssDests  map[*group]ptrace.SpanSlice
	seenSpan map[pcommon.SpanID]struct{}
	seenKey  map[uint64]struct{}
}

func newBuffer(cfg *Config) *buffer {
	names := newServiceTable()
	return &buffer{
		names:    names,
		wait:     cfg.WaitDuration,
		maxWait:  cfg.MaxWait,
		maxSpans: cfg.MaxBufferedSpans,
		reader:   newRecReader(cfg),
		stitchOpts: stitchOptions{
			requestID: cfg.RequestID.Enabled,
			tolerance: uint64(cfg.RequestID.TimeTolerance.Nanoseconds()),
			link:      cfg.StitchMode == StitchModeLink,
		},
		stitcher: newStitcher(names),
		released: newReleasedIndex(cfg.LateSpanTTL, cfg.MaxIndexEntries, names),
		groups:   make(map[pcommon.TraceID]*group),
		bySpanID: newMultiIndex[pcommon.SpanID](),
		byParent: newMultiIndex[pcommon.SpanID](),
		byReqKey: newMultiIndex[uint64](),
		rsDests:  make(map[*group]ptrace.ResourceSpans),
		ssDests:  make(map[*group]ptrace.SpanSlice),
		seenSpan: make(map[pcommon.SpanID]struct{}),
		seenKey:  make(map[uint64]struct{}),
	}
}

type addStats struct {
	spans          int
	invalidRequest int
}

// add moves every span of td into the group of its trace ID.
func (b *buffer) add(td ptrace.Traces, now time.Time) addStats {
	var st addStats
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		resAttrs := rs.Resource().Attributes()
		service := b.names.intern(serviceName(resAttrs))
		dests := b.rsDests
		clear(dests)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			var lastGroup *group
			var lastDest ptrace.SpanSlice
			scopeDests := b.ssDests
			clear(scopeDests)
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				span := spans.At(k)
				rec, invalid := b.reader.read(span, resAttrs, service)
				if invalid {
					st.invalidRequest++
				}
				g := b.groupFor(rec.traceID, now)
				if g != lastGroup {
					dest, ok := scopeDests[g]
					if !ok {
						rsDest, ok := dests[g]
						if !ok {
							rsDest = g.td.ResourceSpans().AppendEmpty()
							rs.Resource().CopyTo(rsDest.Resource())
							rsDest.SetSchemaUrl(rs.SchemaUrl())
							dests[g] = rsDest
						}
						ssDest := rsDest.ScopeSpans().AppendEmpty()
						ss.Scope().CopyTo(ssDest.Scope())
						ssDest.SetSchemaUrl(ss.SchemaUrl())
						dest = ssDest.Spans()
						scopeDests[g] = dest
					}
					lastGroup, lastDest = g, dest
				}
				span.MoveTo(lastDest.AppendEmpty())
				if g.recs == nil {
					g.recs = make([]spanRec, 0, 8)
				}
				g.recs = append(g.recs, rec)
				b.index(g, &g.recs[len(g.recs)-1])
				r := g.root()
				r.spans++
				r.lastSeen = now
				st.spans++
			}
		}
	}
	clear(b.rsDests)
	clear(b.ssDests)
	b.spans += st.spans
	return st
}

func (b *buffer) groupFor(tid pcommon.TraceID, now time.Time) *group {
	if g, ok := b.groups[tid]; ok {
		return g
	}
	g := &group{traceID: tid, td: ptrace.NewTraces(), firstSeen: now, lastSeen: now}
	b.groups[tid] = g
	b.fifo = append(b.fifo, g)
	heap.Push(&b.due, deadlineEntry{at: b.deadline(g), g: g})
	return g
}

func (b *buffer) index(g *group, rec *spanRec) {
	if !rec.spanID.IsEmpty() {
		b.bySpanID.add(rec.spanID, g)
	}
	if p := rec.parentID; !p.IsEmpty() && p != rec.spanID && !b.bySpanID.contains(p, g) {
		b.byParent.add(p, g)
		rec.orphanAtIngest = true
	}
	if !rec.reqKey.empty() {
		b.byReqKey.add(rec.reqKey.hash64(), g)
	}
}

// multiIndex maps a key to the groups holding it. Nearly always one group:
// it lives in a map of plain pointers, the rare others in a side map, so
// indexing a span allocates nothing but its map slot and, while the side
// map is empty, costs one map operation.
type multiIndex[K comparable] struct {
	one  map[K]*group
	more map[K][]*group
}

// has reports whether k has more than one group.
func (x multiIndex[K]) multi(k K) bool {
	if len(x.more) == 0 {
		return false
	}
	_, ok := x.more[k]
	return ok
}

func newMultiIndex[K comparable]() multiIndex[K] {
	return multiIndex[K]{one: make(map[K]*group), more: make(map[K][]*group)}
}

func (x multiIndex[K]) add(k K, g *group) {
	first, ok := x.one[k]
	if !ok {
		x.one[k] = g
		return
	}
	if first == g {
		return
	}
	if more := x.more[k]; len(more) == 0 || more[len(more)-1] != g {
		x.more[k] = append(more, g)
	}
}

func (x multiIndex[K]) contains(k K, g *group) bool {
	if first, ok := x.one[k]; !ok {
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
func (x multiIndex[K]) each(k K, f func(*group)) {
	first, ok := x.one[k]
	if !ok {
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

func (x multiIndex[K]) delete(k K) {
	delete(x.one, k)
	if len(x.more) > 0 {
		delete(x.more, k)
	}
}

// dropReleased removes the released groups of k.
func (x multiIndex[K]) dropReleased(k K) {
	first, ok := x.one[k]
	if !ok {
		return
	}
	if !x.multi(k) {
		if first.released {
			delete(x.one, k)
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
		x.one[k] = keep[0]
		if len(keep) > 1 {
			x.more[k] = keep[1:]
		}
	}
}

// deadline of a unit root: a quiet period after its newest span, capped at
// max_wait after its first.
func (b *buffer) deadline(r *group) time.Time {
	quiet := r.lastSeen.Add(b.wait)
	capAt := r.firstSeen.Add(b.maxWait)
	if capAt.Before(quiet) {
		return capAt
	}
	return quiet
}

// releaseDue returns the units whose deadline has passed.
func (b *buffer) releaseDue(now time.Time) []*unit {
	var out []*unit
	// Expire after releasing: units due now may still use entries that are
	// due to expire now.
	defer b.released.expire(now)
	for b.due.Len() > 0 && !b.due[0].at.After(now) {
		e := heap.Pop(&b.due).(deadlineEntry)
		g := e.g
		if g.released || g.parent != nil {
			continue // released or merged into another unit
		}
		if d := b.deadline(g); d.After(now) {
			heap.Push(&b.due, deadlineEntry{at: d, g: g})
			continue
		}
		r := b.gather(g)
		if d := b.deadline(r); d.After(now) {
			// A fragment of the same request is still fresh: wait for it.
			heap.Push(&b.due, deadlineEntry{at: d, g: r})
			continue
		}
		out = append(out, b.detach(r, now))
	}
	return out
}

// evictOverCapacity releases the oldest units until the buffer is within
// max_buffered_spans.
func (b *buffer) evictOverCapacity(now time.Time) []*unit {
	var out []*unit
	for b.spans > b.maxSpans && b.head < len(b.fifo) {
		g := b.fifo[b.head]
		b.fifo[b.head] = nil
		b.head++
		if g.released {
			continue
		}
		out = append(out, b.detach(b.gather(g.root()), now))
	}
	b.compactFIFO()
	return out
}

// releaseAll releases everything, oldest first (Shutdown).
func (b *buffer) releaseAll(now time.Time) []*unit {
	var out []*unit
	for ; b.head < len(b.fifo); b.head++ {
		g := b.fifo[b.head]
		b.fifo[b.head] = nil
		if !g.released {
			out = append(out, b.detach(b.gather(g.root()), now))
		}
	}
	b.compactFIFO()
	b.due = b.due[:0]
	return out
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
	seenSpan, seenKey := b.seenSpan, b.seenKey
	defer clear(seenSpan)
	defer clear(seenKey)
	follow := func(g *group) {
		if o := g.root(); o != r {
			b.merge(r, o)
		}
	}
	bySpan := func(id pcommon.SpanID) {
		if b.bySpanID.multi(id) || b.byParent.multi(id) {
			if _, seen := seenSpan[id]; seen {
				return
			}
			seenSpan[id] = struct{}{}
		}
		b.bySpanID.each(id, follow)
		b.byParent.each(id, follow)
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
			if rec.orphanAtIngest {
				bySpan(rec.parentID)
			}
			if !rec.reqKey.empty() {
				k := rec.reqKey.hash64()
				if b.byReqKey.multi(k) {
					if _, seen := seenKey[k]; seen {
						continue
					}
					seenKey[k] = struct{}{}
				}
				b.byReqKey.each(k, follow)
			}
		}
	}
	return r
}

// merge folds unit o into unit r.
func (b *buffer) merge(r, o *group) {
	o.parent = r
	if r.members == nil {
		r.members = []*group{r}
	}
	if o.members == nil {
		r.members = append(r.members, o)
	} else {
		r.members = append(r.members, o.members...)
	}
	o.members = nil
	r.spans += o.spans
	if o.firstSeen.Before(r.firstSeen) {
		r.firstSeen = o.firstSeen
	}
	if o.lastSeen.After(r.lastSeen) {
		r.lastSeen = o.lastSeen
	}
}

// detach removes unit r from the buffer and its indexes and decides how it
// is stitched. The pdata is rewritten later, outside the lock.
func (b *buffer) detach(r *group, now time.Time) *unit {
	u := &unit{groups: r.members, spans: r.spans}
	if u.groups == nil {
		u.groups = []*group{r}
	}
	if len(u.groups) == 1 {
		u.recs = r.recs
	} else {
		n := 0
		for _, m := range u.groups {
			n += len(m.recs)
		}
		u.recs = make([]spanRec, 0, n)
		for _, m := range u.groups {
			u.recs = append(u.recs, m.recs...)
		}
	}
	for _, m := range u.groups {
		m.released = true
		if b.groups[m.traceID] == m {
			delete(b.groups, m.traceID)
		}
		m.recs = nil
	}
	// gather followed every key of these spans, so whole keys can go, except
	// byParent lists of a span's parent, which other units may share.
	for i := range u.recs {
		rec := &u.recs[i]
		b.bySpanID.delete(rec.spanID)
		b.byParent.delete(rec.spanID)
		if !rec.reqKey.empty() {
			b.byReqKey.delete(rec.reqKey.hash64())
		}
		if rec.orphanAtIngest {
			b.byParent.dropReleased(rec.parentID)
		}
	}
	b.spans -= u.spans
	u.result = b.stitcher.run(u.recs, b.released, b.stitchOpts)
	b.released.add(u.recs, u.result.traceID, now)
	return u
}

type deadlineEntry struct {
	at time.Time
	g  *group
}

// deadlineQueue is a min-heap of unit deadlines: one ticker serves all
// traces instead of a timer per trace.
type deadlineQueue []deadlineEntry

func (q deadlineQueue) Len() int           { return len(q) }
func (q deadlineQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q deadlineQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *deadlineQueue) Push(x any)        { *q = append(*q, x.(deadlineEntry)) }
func (q *deadlineQueue) Pop() any {
	old := *q
	n := len(old)
	e := old[n-1]
	old[n-1] = deadlineEntry{}
	*q = old[:n-1]
	return e
}
