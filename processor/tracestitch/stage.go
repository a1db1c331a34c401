package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"sync"
	"time"
)

// release is the units of one release: detached from the buffer under its
// lock, then stitched by the stitchStage after the lock is let go.
type release struct {
	now   time.Time
	units []*unit
	// recs holds the records of the units (each unit has its range).
	recs []spanRec
	// turn orders the stitch of releases as their detach was ordered.
	turn uint64
}

var releasePool = sync.Pool{New: func() any { return &release{} }}

// stitchStage decides how detached units are stitched and keeps the
// released-span index their late spans look up. It needs none of the
// buffer's groups and indexes, so it runs outside the buffer lock and
// batches keep arriving meanwhile (the stitch of a unit and the index of
// its released spans are a third of a release's work). Releases take
// turns in the order they were detached, so a release sees in the index
// every unit detached before it, as when all ran under one lock.
type stitchStage struct {
	// next is the turn of the next release; the buffer lock guards it.
	next uint64

	mu       sync.Mutex
	turnDone *sync.Cond
	serving  uint64
	opts     stitchOptions
	stitcher *stitcher
	released *releasedIndex
}

func newStitchStage(cfg *Config, names *serviceTable) *stitchStage {
	st := &stitchStage{
		opts: stitchOptions{
			requestID: cfg.RequestID.Enabled,
			tolerance: uint64(cfg.RequestID.TimeTolerance.Nanoseconds()),
			link:      cfg.StitchMode == StitchModeLink,
		},
		stitcher: newStitcher(names),
		released: newReleasedIndex(cfg.LateSpanTTL, cfg.MaxIndexEntries),
	}
	st.turnDone = sync.NewCond(&st.mu)
	return st
}

// begin starts a release at now. It must be called under the buffer lock
// (which orders the turns), and its release must be passed to run.
func (st *stitchStage) begin(now time.Time) *release {
	rel := releasePool.Get().(*release)
	rel.now, rel.turn = now, st.next
	st.next++
	return rel
}

// run waits for rel's turn, stitches its units and indexes their spans as
// released; it returns the units and recycles rel.
func (st *stitchStage) run(rel *release) []*unit {
	st.mu.Lock()
	for st.serving != rel.turn {
		st.turnDone.Wait()
	}
	for _, u := range rel.units {
		recs := rel.recs[u.recLo:u.recHi]
		u.result = st.stitcher.run(recs, st.released, st.opts)
		st.released.add(recs, st.stitcher.final, rel.now)
		u.markRewrites(recs)
	}
	// Expire after releasing: units released now may still use entries
	// that are due to expire now.
	st.released.expire(rel.now)
	st.serving++
	st.turnDone.Broadcast()
	st.mu.Unlock()

	units := rel.units
	*rel = release{recs: rel.recs[:0]}
	if cap(rel.recs) <= poolMax { // the scratch of a huge release is not kept
		releasePool.Put(rel)
	}
	return units
}
