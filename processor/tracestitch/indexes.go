// The span-ID, parent and request-ID indexes that find the fragments of one request.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"encoding/binary"

	"go.opentelemetry.io/collector/pdata/pcommon"
) // indexKeys indexes the keys of a split batch whose groups are known,
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
			sp.addOp(b.keyShardOf(key.fold()), int32(i), opRequestID)
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
		var loads uint32
		for _, op := range ops {
			switch rec := &sp.recs[op.rec]; op.what {
			case opSpan:
				loads ^= ks.bySpanID.firsts.touch(spanKey(rec.spanID))
			case opParent:
				loads ^= ks.bySpanID.firsts.touch(spanKey(rec.parentID))
			}
		}
		ks.prefetched ^= loads
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

// indexSpan, indexParent and indexRequestID record a span's keys in the
// key shard ks (its lock held) and note every meeting with another group
// (see groupTies.links); each relation gather follows is noticed by
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
	k := key.fold()
	l := linkKey{req: true}
	binary.LittleEndian.PutUint64(l.id[:], k)
	b.link(g, ks.byReqKey.add(k, g), l)
}

// neverTied reports a unit of one group that never shared a key with another.
func (b *buffer) neverTied(r *group) bool {
	return r.ties == nil && !b.gatherAlways
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
		m := x.tiesOrNew()
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
	firsts idTable
	more   map[uint64][]*group
	refs   *groupRefs
}

func newMultiIndex(refs *groupRefs) multiIndex {
	return multiIndex{firsts: newIDTable(), more: make(map[uint64][]*group), refs: refs}
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
	h, ok := x.firsts.add(k, g.ref)
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
	if h, ok := x.firsts.get(k); ok {
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
	x.firsts.del(k)
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
			x.firsts.del(k)
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
		x.firsts.add(k, keep[0].ref)
		if len(keep) > 1 {
			x.more[k] = keep[1:]
		}
	}
}
