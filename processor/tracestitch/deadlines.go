// The deadline heap one ticker serves.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

// deadlineEntry is a unit root's deadline; seq breaks ties, so that the
// order of a release's units does not depend on the shards.
type deadlineEntry struct {
	at  int64
	seq uint64
	g   *group
}

func (e deadlineEntry) before(o deadlineEntry) bool {
	return e.at < o.at || e.at == o.at && e.seq < o.seq
}

// deadlineQueue is a min-heap of unit deadlines: one ticker serves all
// traces instead of a timer per trace.
type deadlineQueue []deadlineEntry

func (q *deadlineQueue) push(e deadlineEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
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
		if l < n && h[l].before(h[m]) {
			m = l
		}
		if r := l + 1; r < n && h[r].before(h[m]) {
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
