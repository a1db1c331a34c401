package tracestitch

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGroupRefs: handles resolve to their groups across segment bounds and
// shards, and a released handle is reused by its own shard only.
func TestGroupRefs(t *testing.T) {
	for _, local := range []uint32{0, 63, 64, 191, 192, 1<<20 - 1, 1 << 27} {
		seg, off := refSegment(local)
		require.Less(t, seg, refSegments, "local %d", local)
		require.Less(t, uint64(off), uint64(64)<<seg, "local %d", local)
		if local > 0 {
			prevSeg, prevOff := refSegment(local - 1)
			require.True(t, prevSeg == seg && prevOff+1 == off || prevSeg+1 == seg && off == 0, "local %d follows %d", local, local-1)
		}
	}
	var refs groupRefs
	var groups []*group
	for i := range 5000 {
		g := &group{shard: uint8(i % 3 * 5)}
		g.ref = refs.ref(g)
		require.Equal(t, uint32(g.shard), g.ref&(traceShards-1))
		groups = append(groups, g)
	}
	for _, g := range groups {
		require.Same(t, g, refs.get(g.ref))
	}
	freed := groups[1234]
	refs.release(freed.ref)
	other := &group{shard: freed.shard + 1}
	require.NotEqual(t, freed.ref, refs.ref(other), "another shard's handle")
	again := &group{shard: freed.shard}
	require.Equal(t, freed.ref, refs.ref(again), "the freed handle is reused")
	require.Same(t, again, refs.get(freed.ref))
}
