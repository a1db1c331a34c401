package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"sync"
	"time"
)

// release is the units of one release: detached from the buffer under its
// exclusive lock, then stitched by the stitchStage after the lock is let go.
type release struct {
	now   time.Time
	units []*unit
	// turn orders the stitch of releases as their detach was ordered.
	turn uint64
}

// stitchStage decides how detached units are stitched and keeps the
// released-span index their late spans look up. It reads only the records
// of detached groups, which nothing in the buffer reaches any more, so it
// runs outside the buffer lock and batches keep arriving meanwhile (the
// stitch of a unit and the index of its released spans are about a third
// of a release's work). Releases take turns in the order they were
// detached, so a release sees in the index every unit detached before it,
// as when all ran under one lock.
type stitchStage struct {
	// next is the turn of the next release; the buffer's exclusive lock
	// guards it.
	next uint64

	mu       sync.Mutex
	turnDone *sync.Cond
	turnNow  uint64 // the turn being stitched
	waiting  int    // releases waiting for their turn
	opts     stitchOptions
	stitcher *stitcher
	released *releasedIndex
	serving  *servingIndex
	epoch    time.Time // the buffer's clock origin (see buffer.clock)
	recs     []spanRec // scratch: the records of the unit being stitched
}

func newStitchStage(cfg *Config, names *serviceTable, serving *servingIndex, epoch time.Time) *stitchStage {
	entry := map[serviceID]bool{}
	for _, svc := range cfg.EntryPoints.Services {
		if id := names.intern(svc); id != 0 {
			entry[id] = true
		}
	}
	st := &stitchStage{
		opts: stitchOptions{
			requestID:   cfg.RequestID.Enabled,
			tolerance:   uint64(cfg.RequestID.TimeTolerance.Nanoseconds()),
			link:        cfg.StitchMode == StitchModeLink,
			serving:     serving,
			entryPoints: entry,
		},
		serving:  serving,
		epoch:    epoch,
		stitcher: newStitcher(names),
		released: newReleasedIndex(cfg.LateSpanTTL, cfg.MaxIndexEntries),
	}
	st.turnDone = sync.NewCond(&st.mu)
	return st
}

// begin starts a release at now. It must be called under the buffer's
// exclusive lock (which orders the turns), and its release must be passed
// to run.
func (st *stitchStage) begin(now time.Time) *release {
	rel := &release{now: now, turn: st.next}
	st.next++
	return rel
}

// run waits for rel's turn, stitches its units and indexes their spans as
// released. The units' groups keep their records (the buffer takes them
// back after, see buffer.retire).
func (st *stitchStage) run(rel *release) []*unit {
	st.mu.Lock()
	for st.turnNow != rel.turn {
		st.waiting++
		st.turnDone.Wait()
		st.waiting--
	}
	for _, u := range rel.units {
		recs := st.recs[:0]
		for _, m := range u.groups {
			recs = m.expand(recs)
		}
		st.recs = recs
		u.result = st.stitcher.run(recs, st.released, st.opts)
		st.released.add(recs, st.stitcher.final, rel.now)
		u.markRewrites(recs)
	}
	// Expire after releasing: units released now may still use entries
	// that are due to expire now.
	st.released.expire(rel.now)
	st.serving.expire(int64(rel.now.Sub(st.epoch)))
	if cap(st.recs) > poolMax {
		st.recs = nil // do not keep the scratch of a huge unit
	}
	st.turnNow++
	st.turnDone.Broadcast()
	st.mu.Unlock()
	return rel.units
}

// waitingReleases is how many releases wait for their turn.
func (st *stitchStage) waitingReleases() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.waiting
}
