// The trace and key shards the buffer is split into, and group handles.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"math/bits"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// The buffer's state is split in shards so that concurrent adds do not
// queue for each other's whole add (see buffer): groups by trace ID,
// indexes by key. A batch of a hundred spans touches most shards, but an
// add holds each for a sixteenth of its work, so concurrent adds move
// through the shards one behind the other. It costs 48 uncontended lock
// operations per batch at most.
const (
	traceShardBits = 4
	traceShards    = 1 << traceShardBits
	keyShardBits   = 4
	keyShards      = 1 << keyShardBits
	linkStripes    = 64
)

// traceShard holds the groups of the trace IDs that hash to it.
type traceShard struct {
	mu     sync.Mutex
	groups map[pcommon.TraceID]*group
	due    deadlineQueue
	fifo   []fifoEntry // groups in creation order, for eviction
	head   int
	recs   slicePool[heldRec]
	exts   slicePool[heldExt]
	_      [64]byte // keeps shards' locks off each other's cache lines
}

// fifoEntry keeps the group's number next to it, so that finding the
// oldest of the shards' queues does not load 16 cold groups.
type fifoEntry struct {
	seq uint64
	g   *group
}

// next takes the oldest group off the shard's queue.
func (ts *traceShard) next() *group {
	g := ts.fifo[ts.head].g
	ts.fifo[ts.head] = fifoEntry{}
	ts.head++
	return g
}

func (ts *traceShard) compactFIFO() {
	if ts.head > 1024 && ts.head > len(ts.fifo)/2 {
		n := copy(ts.fifo, ts.fifo[ts.head:])
		clear(ts.fifo[n:])
		ts.fifo = ts.fifo[:n]
		ts.head = 0
	}
}

// keyShard holds the index entries of the keys that hash to it. Both ends
// of a relation (a span ID and a parent naming it) share their key, so
// noticing one takes one shard's lock.
type keyShard struct {
	mu sync.Mutex
	// bySpanID: groups holding a span with this ID.
	bySpanID multiIndex
	// byParent: groups holding a span whose parent was not in its own group
	// when it arrived (so the parent's group can find it).
	byParent multiIndex
	// byReqKey: groups holding a span with this request ID (by its 64-bit
	// fold: a collision only gathers more, the stitcher compares whole keys).
	byReqKey   multiIndex
	prefetched uint32
	_          [64]byte
}

type paddedMutex struct {
	sync.Mutex
	_ [56]byte
}

// groupRefs hands out 32-bit handles for groups, so that the indexes hold
// no pointers. A handle's low bits name its group's trace shard, which
// hands it out under its lock. A shard's groups live in segments that never
// move (segment k holds 64<<k), so a key shard resolves a handle while
// the trace shard makes more. A handle is freed when its group leaves the
// buffer, after every index entry naming it was removed.
type groupRefs struct {
	shards [traceShards]refShard
}

type refShard struct {
	segs [refSegments][]*group
	n    uint32
	free []uint32
}

// refSegments hold every 32-bit handle.
const refSegments = 32 - traceShardBits - 6 + 1

func refSegment(local uint32) (seg int, off uint32) {
	x := uint64(local) + 64
	seg = bits.Len64(x) - 7
	return seg, uint32(x - 64<<seg)
}

func (r *groupRefs) ref(g *group) uint32 {
	s := &r.shards[g.shard]
	var local uint32
	if n := len(s.free); n > 0 {
		local = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		local = s.n
		s.n++
	}
	seg, off := refSegment(local)
	if s.segs[seg] == nil {
		s.segs[seg] = make([]*group, 64<<seg)
	}
	s.segs[seg][off] = g
	return local<<traceShardBits | uint32(g.shard)
}

func (r *groupRefs) get(h uint32) *group {
	seg, off := refSegment(h >> traceShardBits)
	return r.shards[h&(traceShards-1)].segs[seg][off]
}

func (r *groupRefs) release(h uint32) {
	s := &r.shards[h&(traceShards-1)]
	local := h >> traceShardBits
	seg, off := refSegment(local)
	s.segs[seg][off] = nil
	s.free = append(s.free, local)
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
