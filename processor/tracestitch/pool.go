// Pooled slices, FIFO queues and scratch slices.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import "slices" // slicePool recycles the record slices of released groups: records are the
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

// grow returns a slice of length n, reusing buf's memory when it can.
func grow[T any](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n)
	}
	buf = buf[:n]
	clear(buf)
	return buf
}

// queue is a FIFO in fixed-size chunks: it grows without copying, and a
// steady flow reuses the chunks it drained.
type queue[T any] struct {
	chunks         [][]T
	head           int // position of the oldest item in chunks[0]
	spare          [][]T
	pushed, popped uint64 // totals, to address items by absolute position
}

const queueChunk = 512

func (q *queue[T]) len() int { return int(q.pushed - q.popped) }

func (q *queue[T]) push(v T) {
	if n := len(q.chunks); n == 0 || len(q.chunks[n-1]) == queueChunk {
		var c []T
		if l := len(q.spare); l > 0 {
			c, q.spare = q.spare[l-1], q.spare[:l-1]
		} else {
			c = make([]T, 0, queueChunk)
		}
		q.chunks = append(q.chunks, c)
	}
	last := &q.chunks[len(q.chunks)-1]
	*last = append(*last, v)
	q.pushed++
}

func (q *queue[T]) pop() T {
	c := q.chunks[0]
	v := c[q.head]
	var zero T
	c[q.head] = zero
	q.head++
	q.popped++
	if q.head == len(c) && (len(c) == queueChunk || q.popped == q.pushed) {
		// chunk drained: keep a few for reuse
		if len(q.spare) < 4 {
			q.spare = append(q.spare, c[:0])
		}
		n := copy(q.chunks, q.chunks[1:])
		q.chunks[n] = nil
		q.chunks = q.chunks[:n]
		q.head = 0
	}
	return v
}

// at is the i-th oldest item.
func (q *queue[T]) at(i int) T { return *q.ptr(i) }

// ptr points at the i-th oldest item.
func (q *queue[T]) ptr(i int) *T {
	j := q.head + i
	return &q.chunks[j/queueChunk][j%queueChunk]
}

// fromEnd is the i-th newest item (0 is the newest).
func (q *queue[T]) fromEnd(i int) T { return q.at(q.len() - 1 - i) }
