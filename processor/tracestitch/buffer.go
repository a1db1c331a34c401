// The buffer and its whole lock protocol: adds, releases, evictions, the flush.

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
)

// buffer is the per-trace buffer with the indexes that find fragments of the
// same request, and its whole lock protocol: callers use ingest, takeDue,
// takeAll, retire and bufferedSpans, never its locks or counters.
//
// Adds (ingest) run concurrently: each holds lock shared and locks only the
// shards it touches, one at a time: the trace shards of its trace IDs
// (groups, deadlines, record pools) and the key shards of its span IDs,
// parents and request IDs (the indexes). Everything that takes units out
// (a release, an eviction, Shutdown) holds lock exclusively, needs no shard
// lock then, and numbers its release so that releases are stitched in the
// order they were taken.
type buffer struct {
	wait, maxWait time.Duration
	maxSpans      int
	reader        recReader

	lock     sync.RWMutex
	nextTurn uint64 // the next release's turn (exclusive lock)

	traces [traceShards]traceShard
	keys   [keyShards]keyShard
	refs   groupRefs
	names  *serviceTable
	// serving is the SERVER spans' time ranges by instance (own lock); nil
	// in key mode, where no outcome is judged.
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
	// prefetched keeps the loads of idTable.touch from being optimized away.
	prefetched uint32

	// gatherAlways turns off both release shortcuts (groups that never met
	// another, and following only shared keys): every release then follows
	// every key of every span. Tests compare both ways.
	gatherAlways bool
}

func newBuffer(cfg *Config) *buffer {
	b := &buffer{
		epoch:     time.Now(),
		names:     newServiceTable(),
		wait:      cfg.WaitDuration,
		maxWait:   cfg.MaxWait,
		maxSpans:  cfg.MaxBufferedSpans,
		reader:    newRecReader(cfg),
		shardSeed: rand.Uint64(),
		keySeed:   rand.Uint64(),
		seenSpan:  make(map[pcommon.SpanID]struct{}),
		seenKey:   make(map[uint64]struct{}),
	}
	if cfg.Mode != ModeKey {
		// a fragment root is released within max_wait of its first span,
		// and late ones follow within late_span_ttl
		b.serving = newServingIndex(int64(2*cfg.MaxWait+cfg.LateSpanTTL), cfg.MaxBufferedSpans+cfg.MaxIndexEntries)
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

// release is the units of one release: detached from the buffer under its
// exclusive lock, then stitched (see stitchStage) after the lock is let go.
type release struct {
	now   time.Time
	units []*unit
	// turn orders the stitch of releases as their detach was ordered.
	turn uint64
}

// ingest adds a split batch. Batches are added concurrently, under the lock
// held shared; only a batch that would take the buffer past
// max_buffered_spans takes it exclusively. Over capacity, the oldest units
// are detached before the lock is let go: the buffer never holds more, and
// the caller carries the returned eviction downstream (nil when none).
func (b *buffer) ingest(sp *batchSplit, now time.Time) (addStats, *release) {
	b.lock.RLock()
	added := b.reserve(sp.st.spans)
	var st addStats
	if added {
		st = b.add(sp, now)
	}
	b.lock.RUnlock()
	if added {
		return st, nil
	}
	b.lockExclusive()
	defer b.lock.Unlock()
	b.spans.Add(int64(sp.st.spans))
	st = b.add(sp, now)
	if b.spans.Load() <= int64(b.maxSpans) {
		return st, nil
	}
	eviction := b.newRelease(now)
	b.evictOverCapacity(eviction)
	return st, eviction
}

// takeDue detaches every unit whose wait is over at now.
func (b *buffer) takeDue(now time.Time) *release { return b.take(now, (*buffer).detachDue) }

// takeAll detaches every unit (Shutdown).
func (b *buffer) takeAll(now time.Time) *release { return b.take(now, (*buffer).detachAll) }

func (b *buffer) take(now time.Time, detach func(*buffer, *release)) *release {
	b.lockExclusive()
	defer b.lock.Unlock()
	rel := b.newRelease(now)
	detach(b, rel)
	b.serving.expire(b.clock(now))
	return rel
}

// newRelease starts a release at now, numbered in turn (exclusive lock).
func (b *buffer) newRelease(now time.Time) *release {
	rel := &release{now: now, turn: b.nextTurn}
	b.nextTurn++
	return rel
}

// bufferedSpans is the number of spans held (the count reserved by adds).
func (b *buffer) bufferedSpans() int64 {
	b.lock.RLock()
	defer b.lock.RUnlock()
	return b.spans.Load()
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

// lockExclusive takes the lock exclusively and first takes back the
// records of retired units.
func (b *buffer) lockExclusive() {
	b.lock.Lock()
	b.recycleRetired()
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

type addStats struct {
	spans          int
	invalidRequest int
}

// add hands the fragments of a split batch to the groups of their trace
// IDs and indexes their spans. The caller holds the lock, shared or
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
			r.noteSeen(now)
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

// traceShardOf hashes a trace ID's low 64 bits (all of a 64-bit one).
func (b *buffer) traceShardOf(tid pcommon.TraceID) int {
	return int(mix64(binary.LittleEndian.Uint64(tid[8:])^b.shardSeed) >> (64 - traceShardBits))
}

// keyShardOf hashes with a seed of its own (not the idTables'), so a
// shard's keys still spread over its tables.
func (b *buffer) keyShardOf(k uint64) int {
	return int(mix64(k^b.keySeed) >> (64 - keyShardBits))
}

func (b *buffer) keyShard(k uint64) *keyShard { return &b.keys[b.keyShardOf(k)] }

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

// detachDue detaches the units whose deadline has passed into rel, in
// deadline order over all trace shards.
func (b *buffer) detachDue(rel *release) {
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

// detachAll detaches everything into rel, oldest first (Shutdown).
func (b *buffer) detachAll(rel *release) {
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
	if b.neverTied(r) {
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
				byReq(key.fold())
			}
		}
	}
	return r
}

// merge folds unit o into unit r.
func (b *buffer) merge(r, o *group) {
	o.parent = r
	rm := r.tiesOrNew()
	if rm.members == nil {
		rm.members = []*group{r}
	}
	if om := o.members(); om == nil {
		rm.members = append(rm.members, o)
	} else {
		rm.members = append(rm.members, om...)
		o.ties.members = nil
	}
	r.spans.Add(o.spans.Load())
	r.firstSeen = min(r.firstSeen, o.firstSeen)
	r.noteSeen(o.lastSeen.Load())
}

// detach removes unit r from the buffer and its indexes and adds it to
// rel, to be stitched outside the buffer lock (see stitchStage); its
// groups keep their records until then.
func (b *buffer) detach(r *group, rel *release) {
	u := &unit{groups: r.members(), spans: int(r.spans.Load())}
	if u.groups == nil {
		u.single[0] = r
		u.groups = u.single[:]
	}
	u.groupSpans = u.singleSpans[:]
	if len(u.groups) > 1 {
		u.groupSpans = make([]int, len(u.groups))
		// The stitch does not depend on the order gather met the groups
		// in (where a malformed input leaves a choice, e.g. which edge of
		// a parent cycle is cut): records go in creation order.
		slices.SortFunc(u.groups, func(a, b *group) int { return cmp.Compare(a.seq, b.seq) })
	}
	var loads uint32
	for k, m := range u.groups {
		u.groupSpans[k] = len(m.recs)
		m.released = true
		if ts := &b.traces[m.shard]; ts.groups[m.traceID] == m {
			delete(ts.groups, m.traceID)
		}
		for i := range m.recs {
			k := spanKey(m.recs[i].spanID)
			loads ^= b.keyShard(k).bySpanID.firsts.touch(k)
		}
	}
	b.prefetched ^= loads
	// gather followed every key of these spans, so whole keys can go, except
	// byParent lists of a span's parent, which other units may share.
	tied := !b.neverTied(r)
	var lastKey reqKey // a whole key goes at once: once per run of it
	for _, m := range u.groups {
		for i := range m.recs {
			h := &m.recs[i]
			if k := spanKey(h.spanID); k != 0 {
				ks := b.keyShard(k)
				ks.bySpanID.delete(k)
				if tied { // else no other group's orphan waits for this span
					ks.byParent.delete(k)
				}
			}
			if key := m.reqKeyOf(h); !key.empty() && key != lastKey {
				k := key.fold()
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
