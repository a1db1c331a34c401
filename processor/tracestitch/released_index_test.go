package tracestitch

import (
	"testing"

	"github.com/stretchr/testify/require"
)

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
