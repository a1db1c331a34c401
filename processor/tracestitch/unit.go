// Groups (the buffered spans of one trace ID) and units (groups released together).

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"sync/atomic"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
) // group holds the buffered spans of one trace ID. Groups that may belong to
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
	// ties is what only groups tied to another by a shared key have (most
	// never are).
	ties     *groupTies
	ref      uint32 // handle in the buffer's indexes
	shard    uint8  // trace shard
	released bool
}

type groupTies struct {
	// members of a unit that merged, on its root (the root first).
	members []*group
	// links are the keys (span ID, parent, request ID) of this group that
	// were seen in another group, so releasing it must gather, following
	// these only. A group without links leaves alone without looking at
	// its indexes.
	links []linkKey
}

func (g *group) members() []*group {
	if g.ties == nil {
		return nil
	}
	return g.ties.members
}

func (g *group) links() []linkKey {
	if g.ties == nil {
		return nil
	}
	return g.ties.links
}

func (g *group) tiesOrNew() *groupTies {
	if g.ties == nil {
		g.ties = &groupTies{}
	}
	return g.ties
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
// which hold the buffer lock shared: merges happen under the exclusive lock.
func (g *group) findRoot() *group {
	for g.parent != nil {
		g = g.parent
	}
	return g
}

// noteSeen records that a span of the unit arrived at now.
func (g *group) noteSeen(now int64) {
	for {
		last := g.lastSeen.Load()
		if now <= last || g.lastSeen.CompareAndSwap(last, now) {
			return
		}
	}
}

// unit is a set of groups released together.
type unit struct {
	groups      []*group
	groupSpans  []int  // spans per group
	rewrite     []bool // per group: some span is rewritten (nil: none)
	result      stitchResult
	spans       int
	single      [1]*group // groups of a unit of one group, without allocating
	singleSpans [1]int
}

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

// markRewrites records which groups of the unit have spans to rewrite;
// recs are the unit's records, in group order.
func (u *unit) markRewrites(recs []spanRec) {
	res := &u.result
	if res.traceID == nil {
		return
	}
	u.rewrite = make([]bool, len(u.groups))
	lo := 0
	for k, n := range u.groupSpans {
		hi := lo + n
		// a new parent or link goes with a stitch method, so this covers them
		for i := lo; i < hi && !u.rewrite[k]; i++ {
			u.rewrite[k] = res.traceID[i] != recs[i].traceID || res.stitchedBy[i] != methodNone
		}
		lo = hi
	}
}
