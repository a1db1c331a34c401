// The open-addressing table of span IDs behind the indexes.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import "math/rand/v2"

// idTable maps nonzero 64-bit keys (span IDs, request-ID folds) to 32-bit
// values (group handles). It is the buffer's per-span index, touched on
// every span's arrival and release, so it is built for that: open
// addressing with linear probing in 12-byte slots without pointers, one
// cache line per operation in the common case, and deletion by backward
// shift (no tombstones, so a steady flow never degrades or rehashes).
// Inserting and deleting random IDs takes about half a Go map's time at
// 10⁵–10⁶ entries (BenchmarkIDTable), in about the same memory.
//
// Positions come from a keyed mix with a random per-process seed, so that
// senders cannot choose span IDs that collide.
type idTable struct {
	slots []idSlot
	mask  uint64
	n     int
	seed  uint64
}

// idSlot is a key split in two halves (keeping the slot at 12 bytes) and
// its value; a zero key is an empty slot.
type idSlot struct {
	lo, hi, val uint32
}

const idTableMin = 64

func newIDTable() idTable {
	return idTable{
		slots: make([]idSlot, idTableMin),
		mask:  idTableMin - 1,
		seed:  rand.Uint64(), // math/rand/v2's global source: seeded randomly per process
	}
}

func (t *idTable) len() int { return t.n }

func (t *idTable) home(k uint64) uint64 {
	return mix64(k^t.seed) & t.mask
}

func (s *idSlot) key() uint64 { return uint64(s.hi)<<32 | uint64(s.lo) }

// find returns the slot of k, or the empty slot where k would go.
func (t *idTable) find(k uint64) *idSlot {
	lo, hi := uint32(k), uint32(k>>32)
	for i := t.home(k); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.lo == lo && s.hi == hi || s.lo|s.hi == 0 {
			return s
		}
	}
}

// touch loads k's home slot and returns a word of it. Touching the slots a
// batch of operations will use, before doing them, lets their cache misses
// overlap instead of coming one after the other.
func (t *idTable) touch(k uint64) uint32 { return t.slots[t.home(k)].lo }

// get returns k's value.
func (t *idTable) get(k uint64) (uint32, bool) {
	s := t.find(k)
	if s.lo|s.hi == 0 {
		return 0, false
	}
	return s.val, true
}

// add stores v under k unless k is present; it returns the value k had.
// The zero key (an empty ID) is never stored.
func (t *idTable) add(k uint64, v uint32) (uint32, bool) {
	if k == 0 {
		return 0, false
	}
	s := t.find(k)
	if s.lo|s.hi != 0 {
		return s.val, true
	}
	t.fill(s, k, v)
	return 0, false
}

// fill stores k and v in the empty slot s, growing the table past 70% load.
func (t *idTable) fill(s *idSlot, k uint64, v uint32) {
	s.lo, s.hi, s.val = uint32(k), uint32(k>>32), v
	t.n++
	if t.n*10 > len(t.slots)*7 {
		t.resize(2 * len(t.slots))
	}
}

// swap stores v under k and returns the value k had.
func (t *idTable) swap(k uint64, v uint32) (uint32, bool) {
	if k == 0 {
		return 0, false
	}
	s := t.find(k)
	if s.lo|s.hi != 0 {
		old := s.val
		s.val = v
		return old, true
	}
	t.fill(s, k, v)
	return 0, false
}

// reset empties the table and sizes it for n keys at most half full,
// keeping its memory when it fits (scratch reused per unit; the memory of
// a huge unit is not kept).
func (t *idTable) reset(n int) {
	size := idTableMin
	for size < 2*n {
		size *= 2
	}
	if c := cap(t.slots); c >= size && (c <= 4*size || c <= 1<<16) {
		t.slots = t.slots[:size]
		clear(t.slots)
	} else {
		t.slots = make([]idSlot, size)
	}
	if t.seed == 0 {
		t.seed = rand.Uint64()
	}
	t.mask = uint64(size - 1)
	t.n = 0
}

// del removes k if present.
func (t *idTable) del(k uint64) {
	i := uint64(0)
	lo, hi := uint32(k), uint32(k>>32)
	for i = t.home(k); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.lo|s.hi == 0 {
			return
		}
		if s.lo == lo && s.hi == hi {
			break
		}
	}
	// Shift later slots of the run back over the hole unless that would
	// move them before their home position.
	for j := i; ; {
		j = (j + 1) & t.mask
		s := &t.slots[j]
		if s.lo|s.hi == 0 {
			break
		}
		if h := t.home(s.key()); (j-h)&t.mask >= (j-i)&t.mask {
			t.slots[i] = *s
			i = j
		}
	}
	t.slots[i] = idSlot{}
	t.n--
	// Like a Go map, the table keeps its size when it drains: shrinking
	// made every burst rehash its way down and up again (several times the
	// cost of the operations, BenchmarkIDTable), and max_buffered_spans
	// bounds the size anyway.
}

func (t *idTable) resize(size int) {
	old := t.slots
	t.slots = make([]idSlot, size)
	t.mask = uint64(size - 1)
	for i := range old {
		if s := &old[i]; s.lo|s.hi != 0 {
			*t.find(s.key()) = *s
		}
	}
}
