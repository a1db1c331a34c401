package tracestitch

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSlicePoolClasses: reserve grows to the smallest class with room
// (never by less than a quarter), recycles what it leaves, and the pool
// takes back only class-sized slices, within its bound.
func TestSlicePoolClasses(t *testing.T) {
	var p slicePool[int]
	s := p.reserve(nil, 9)
	require.Equal(t, 10, cap(s), "9 fits the class of 10")
	s = append(s, make([]int, 9)...)
	s2 := p.reserve(s, 1)
	require.Equal(t, 10, cap(s2), "room left: the same slice")
	s2 = append(s2, 1)
	s3 := p.reserve(s2, 1)
	require.Equal(t, 12, cap(s3), "11 needed, grown by a quarter (10+2) at least: class 12")
	require.Equal(t, 10, len(s3))
	require.Equal(t, 10, p.pooled, "the old slice went back to the pool")
	again := p.get(10)
	require.Equal(t, 10, cap(again))
	require.Zero(t, p.pooled, "and came out again")

	p.put(make([]int, 0, 11)) // not a class
	require.Zero(t, p.pooled)
	require.Equal(t, 5000, cap(p.get(5000)), "beyond the classes: exact, unpooled")
	for range poolMax/traceShards/4096 + 2 {
		p.put(make([]int, 0, 4096))
	}
	require.Equal(t, poolMax/traceShards, p.pooled, "a shard's share of the bound")
}

// TestQueueAcrossChunks pushes and pops across chunk boundaries and checks
// positions, which the released index uses to address its entries.
func TestQueueAcrossChunks(t *testing.T) {
	var q queue[int]
	next, oldest := 0, 0
	for round := 0; round < 5; round++ {
		for range 3*queueChunk/2 + round {
			q.push(next)
			next++
		}
		require.Equal(t, next-oldest, q.len())
		require.Equal(t, oldest, q.at(0))
		require.Equal(t, next-1, q.fromEnd(0))
		require.Equal(t, oldest+q.len()/2, q.at(q.len()/2))
		for range q.len() - round {
			require.Equal(t, oldest, q.pop())
			oldest++
		}
		require.Equal(t, uint64(oldest), q.popped)
		require.Equal(t, uint64(next), q.pushed)
	}
	for q.len() > 0 {
		require.Equal(t, oldest, q.pop())
		oldest++
	}
	require.LessOrEqual(t, len(q.spare), 4)
}
