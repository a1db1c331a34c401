//go:build e2e

package scale

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/meshsim"
)

// traffic is the default simulated mesh (an Istio gateway; reviews forwards
// only x-request-id, ledger forwards nothing), requests started at rate per
// second from now.
func traffic(t *testing.T, seed int64, requests int, rate float64) (*meshsim.Result, meshsim.Options) {
	topo, err := meshsim.LoadTopology("")
	require.NoError(t, err)
	opts := meshsim.DefaultOptions()
	opts.Seed, opts.Requests, opts.Rate, opts.Start = seed, requests, rate, time.Now()
	return meshsim.Run(topo, opts), opts
}

// sendTo hands each batch to every subject's entry.
func sendTo(subjects ...*subject) func(context.Context, []*meshsim.Span) error {
	return func(ctx context.Context, b []*meshsim.Span) error {
		for _, s := range subjects {
			if err := s.entry.Send(ctx, b); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		return nil
	}
}

// edges is each span's trace ID and parent as stored.
func edges(out []meshsim.OutSpan) map[string]string {
	m := make(map[string]string, len(out))
	for _, o := range out {
		m[o.Key()] = o.TraceID + "/" + o.ParentID
	}
	return m
}

func TestScaleOut(t *testing.T) {
	e := newEnv(t)
	two := e.twoStage("two-stage")
	one := e.single("single")
	byTraceID := e.traceIDRouted("trace-id")

	res, opts := traffic(t, 1, 300, 30)
	n := len(res.Spans)
	sent, err := meshsim.Replay(e.ctx, res.Spans, opts.FlushInterval, sendTo(two, one, byTraceID))
	require.NoError(t, err)
	require.Equal(t, n, sent)

	type result struct {
		r   meshsim.Report
		c   counts
		out []meshsim.OutSpan
	}
	results := map[*subject]result{}
	var table []string
	for _, s := range []*subject{one, two, byTraceID} {
		s.awaitReleased(t, n)
		out := s.stored(e.ctx, t, res.Spans, n)
		r := meshsim.Evaluate(res.Spans, out)
		c := s.counts()
		results[s] = result{r, c, out}
		table = append(table, row(s.name, r, c, len(out)))
	}
	logTable(t, "same traffic, three ways of running tracestitch:", append([]string{tableHeader}, table...)...)

	rOne, rTwo, rByID := results[one].r, results[two].r, results[byTraceID].r
	cOne, cTwo := results[one].c, results[two].c
	for _, s := range []*subject{one, two} {
		r := results[s].r
		assert.Zero(t, r.WrongEdges, "%s: wrong edges %v", s.name, r.Examples)
		assert.Zero(t, r.Lost, "%s: spans not in Jaeger", s.name)
		assert.Zero(t, r.Duplicated, s.name)
		assert.Zero(t, results[s].c.dropped, "%s: spans dropped by the processor", s.name)
		assert.Zero(t, s.exporterLoss(), "%s: spans refused or not delivered", s.name)
	}
	assert.Positive(t, rOne.Recoverable)
	assert.Equal(t, rOne.RestoredRecoverable, rTwo.RestoredRecoverable, "recall equals the single collector's")
	assert.Equal(t, edges(results[one].out), edges(results[two].out), "Jaeger holds the same traces")
	assert.Equal(t, rOne.DisconnectedAfter, rTwo.DisconnectedAfter)

	assert.Equal(t, cOne.stitchParentID, cTwo.stitchParentID, "stitches{parent_id}")
	assert.Equal(t, cOne.stitchRequestID, cTwo.stitchRequestID, "stitches{request_id}")
	assert.Equal(t, cOne.ambiguous, cTwo.ambiguous, "ambiguous")
	assert.Equal(t, cOne.stitched, cTwo.stitched, "traces{stitched}")
	assert.Equal(t, cOne.traces(), cTwo.traces(), "traces")
	// The one exception: a fragment whose context was lost (its app forwards
	// nothing) is judged by the SERVER spans of its instance, which travel
	// with their own request's key and may be on the other instance. Such a
	// fragment is counted connected there instead of disconnected; nothing
	// else moves, and no more fragments than the unrecoverable ones can.
	unjudged := cOne.disconnected - cTwo.disconnected
	assert.GreaterOrEqual(t, unjudged, 0.0)
	assert.LessOrEqual(t, unjudged, float64(rOne.DisconnectedTruth), "at most the fragments that lost their context")
	assert.Equal(t, unjudged, cTwo.connected-cOne.connected)
	assert.Equal(t, unjudged, cOne.blamed-cTwo.blamed)
	assert.Equal(t, float64(rOne.DisconnectedTruth), cOne.disconnected, "the single collector's count is the ground truth")
	t.Logf("two-stage tier: %.0f of %.0f lost-context fragments judged without their SERVER span (counted connected, not blamed); metric share %.1f%% vs %.1f%%, Jaeger's %.1f%%",
		unjudged, cOne.disconnected, 100*cTwo.disconnected/cTwo.traces(), 100*cOne.disconnected/cOne.traces(), 100*rTwo.ShareAfter())

	// The warning against routing by trace ID alone, measured.
	t.Logf("routing by trace ID without a key stage: recall %.1f%% (single %.1f%%), wrong edges %d, disconnected in Jaeger %.1f%% (truth %.1f%%)",
		100*rByID.Recall(), 100*rOne.Recall(), rByID.WrongEdges, 100*rByID.ShareAfter(), 100*rByID.ShareTruth())
	assert.Less(t, rByID.Recall(), rOne.Recall(), "routing by trace ID splits requests")

	costOfTwoStages(t, e, one, two, n)
}

// costOfTwoStages sends the same bulk traffic, back to back, to the single
// collector and to the two-stage tier in alternating rounds and prints the
// CPU each used per span, less what it uses idle.
func costOfTwoStages(t *testing.T, e *env, one, two *subject, already int) {
	bulk, opts := traffic(t, 2, 1500, 0)
	batches := meshsim.Batches(bulk.Spans, opts.FlushInterval)
	idle := map[*subject]float64{} // CPU seconds per second
	for _, s := range []*subject{one, two} {
		before, at := s.cpu(t), time.Now()
		time.Sleep(3 * time.Second)
		idle[s] = (s.cpu(t) - before).Seconds() / time.Since(at).Seconds()
	}
	const rounds = 2
	used := map[*subject]time.Duration{}
	released := map[*subject]int{one: already, two: already}
	for range rounds {
		for _, s := range []*subject{one, two} {
			before, at := s.cpu(t), time.Now()
			for _, b := range batches {
				require.NoError(t, s.entry.Send(e.ctx, b))
			}
			released[s] += len(bulk.Spans)
			s.awaitReleased(t, released[s])
			d := s.cpu(t) - before - time.Duration(idle[s]*float64(time.Since(at)))
			used[s] += d
		}
	}
	perSpan := func(s *subject) float64 {
		return float64(used[s].Microseconds()) / float64(rounds*len(bulk.Spans))
	}
	t.Logf("CPU per span, %d rounds of %d spans in %d POSTs: single collector %.1f µs, two-stage tier (front + 2 instances) %.1f µs: %.2f×",
		rounds, len(bulk.Spans), len(batches), perSpan(one), perSpan(two), perSpan(two)/perSpan(one))
}
