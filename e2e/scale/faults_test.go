//go:build e2e

package scale

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/meshsim"
)

const (
	accepted  = "otelcol_receiver_accepted_spans"
	lbSent    = "otelcol_exporter_sent_spans"
	lb        = `exporter="load_balancing"`
	buffered  = "otelcol_processor_tracestitch_spans_buffered"
	outageFor = 3 * time.Second
)

// thirds splits spans, in arrival order, into three parts of equal duration.
func thirds(spans []*meshsim.Span) [3][]*meshsim.Span {
	var parts [3][]*meshsim.Span
	first, last := spans[0].Arrival, spans[len(spans)-1].Arrival
	span := last.Sub(first)
	for _, s := range spans {
		i := min(int(3*s.Arrival.Sub(first)/(span+1)), 2)
		parts[i] = append(parts[i], s)
	}
	return parts
}

// settled waits until the values read stay the same for quiet and returns
// them. A sender reconnects to a restarted collector within gRPC's
// connection backoff (up to several seconds after an outage this short), so
// quiet must outlast it.
func settled(t *testing.T, what string, quiet time.Duration, read func() []float64) []float64 {
	t.Helper()
	last, since := read(), time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		v := read()
		if fmt.Sprint(v) != fmt.Sprint(last) {
			last, since = v, time.Now()
		}
		if time.Since(since) >= quiet {
			return v
		}
	}
	require.FailNow(t, what+" did not settle", "last read %v", last)
	return nil
}

// TestInstanceStoppedMidRun stops the second instance of a two-stage tier
// after a third of the traffic, sends the next third while it is down,
// starts it again and sends the rest. The front collector keeps running.
func TestInstanceStoppedMidRun(t *testing.T) {
	for _, tc := range []struct {
		signal string
		stop   func(i instance) error
	}{
		{"SIGTERM", instance.stop},
		{"SIGKILL", func(i instance) error { i.kill(); return nil }},
	} {
		t.Run(tc.signal, func(t *testing.T) {
			e := newEnv(t)
			tier := e.twoStage("tier")
			survivor, victim := tier.instances[0], tier.instances[1]
			res, opts := traffic(t, 3, 240, 24)
			n := len(res.Spans)
			parts := thirds(res.Spans)
			send := func(part []*meshsim.Span) {
				sent, err := meshsim.Replay(e.ctx, part, opts.FlushInterval, sendTo(tier))
				require.NoError(t, err)
				require.Equal(t, len(part), sent)
			}

			// Part one; the stop comes once the front has delivered it, while
			// both stages of the victim still hold spans.
			send(parts[0])
			require.Eventually(t, func() bool {
				return survivor.key.scrape().Sum(accepted)+victim.key.scrape().Sum(accepted) == float64(len(parts[0]))
			}, time.Minute, 100*time.Millisecond, "the front delivered part one")
			victimKey := victim.key.scrape()
			held := victimKey.Sum(buffered) + victim.stitch.scrape().Sum(buffered)
			victimAccepted := victimKey.Sum(accepted)
			survivorSent := survivor.key.scrape().Sum(lbSent, lb)
			stopAt := time.Now()
			require.NoError(t, tc.stop(victim))
			stopTook := time.Since(stopAt)
			intoVictim := survivor.key.scrape().Sum(lbSent, lb) - survivorSent

			// Part two, sent while the victim is down, then quiet.
			send(parts[1])
			time.Sleep(outageFor)
			settled(t, "the survivor", 2*time.Second, func() []float64 {
				key := survivor.key.scrape()
				return []float64{tier.front.scrape().Sum(accepted), key.Sum(buffered), key.Sum(lbSent, lb)}
			})
			survivorStitchBefore := survivor.stitch.scrape().Sum(accepted)

			// The restarted victim gets only what was held for it while down:
			// the front's spans for its key stage, the survivor's for its stitch
			// stage. Its key stage sends what it gets to both stitch stages.
			victim.restart()
			require.Eventually(t, func() bool {
				return survivor.key.scrape().Sum(accepted)+victimAccepted+victim.key.scrape().Sum(accepted) == tier.front.scrape().Sum(accepted)
			}, 2*time.Minute, 250*time.Millisecond, "the front delivered what it held")
			after := settled(t, "the restarted victim", 12*time.Second, func() []float64 {
				key := victim.key.scrape()
				return []float64{
					key.Sum(accepted), key.Sum(buffered), key.Sum(lbSent, lb),
					victim.stitch.scrape().Sum(accepted), survivor.stitch.scrape().Sum(accepted),
				}
			})
			heldByFront := after[0]
			toSurvivor := after[4] - survivorStitchBefore
			heldBySurvivor := after[3] - (after[2] - toSurvivor)

			send(parts[2])
			out := tier.stored(e.ctx, t, res.Spans, n)
			r := meshsim.Evaluate(res.Spans, out)
			c := tier.counts()
			logTable(t, tc.signal+" of one instance after a third of the traffic, the next third sent while it was down:",
				tableHeader, row(tier.name, r, c, len(out)))
			t.Logf("%s: stopping took %v; the victim's stages held %.0f spans (and %.0f more were sent its way by the survivor until it stopped); lost %d; "+
				"held while it was down and delivered after the restart: %.0f by the front, %.0f by the survivor's key stage; delivered twice %d; recall %.2f%%",
				tc.signal, stopTook.Round(time.Millisecond), held, intoVictim, r.Lost, heldByFront, heldBySurvivor, r.Duplicated, 100*r.Recall())

			assert.True(t, tier.front.Alive(), "the front collector outlives the instance")
			assert.Zero(t, tier.exporterLoss(), "nothing refused or given up by a running collector's exporters")
			assert.Zero(t, c.dropped, "nothing dropped by the running processors")
			assert.Zero(t, r.WrongEdges, "wrong edges: %v", r.Examples)
			assert.Zero(t, r.Duplicated)
			assert.Positive(t, heldByFront, "the outage held spans at the front")
			stored := map[string]bool{}
			for _, o := range out {
				stored[o.Key()] = true
			}
			beforeStop := map[string]bool{}
			for _, s := range parts[0] {
				beforeStop[s.Key] = true
			}
			for _, s := range res.Spans {
				if !stored[s.Key] {
					assert.True(t, beforeStop[s.Key], "%s was lost although it was sent after the stop", s.Key)
				}
			}
			if tc.signal == "SIGTERM" {
				assert.Zero(t, r.Lost, "Shutdown flushes")
			}
		})
	}
}
