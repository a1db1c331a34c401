// The stitch stage: releases stitched in turn, outside the buffer lock.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"sync"
)

// stitchStage decides how detached units are stitched and keeps the
// released-span index their late spans look up. It reads only the records
// of detached groups, which nothing in the buffer reaches any more, so it
// runs outside the buffer lock and batches keep arriving meanwhile (the
// stitch of a unit and the index of its released spans are about a third
// of a release's work). Releases take turns in the order they were
// detached, so a release sees in the index every unit detached before it,
// as when all ran under one lock.
type stitchStage struct {
	mu       sync.Mutex
	turnDone *sync.Cond
	turnNow  uint64 // the turn being stitched
	waiting  int    // releases waiting for their turn
	opts     stitchOptions
	stitcher *stitcher
	released *releasedIndex
	// keyOnly: key mode, where units leave unstitched (see keyLabeler).
	keyOnly bool
	recs    []spanRec // scratch: the records of the unit being stitched
}

func newStitchStage(cfg *Config, names *serviceTable, serving *servingIndex) *stitchStage {
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
			entryPoints: entry,
		},
		keyOnly:  cfg.Mode == ModeKey,
		stitcher: newStitcher(names),
		released: newReleasedIndex(cfg.LateSpanTTL, cfg.MaxIndexEntries),
	}
	if serving != nil {
		st.opts.serving = serving
	}
	st.turnDone = sync.NewCond(&st.mu)
	return st
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
		if st.keyOnly {
			continue
		}
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
