package tracestitch

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/meshsim"
)

// accuracyScenario is one cell of the accuracy matrix.
type accuracyScenario struct {
	name        string
	propagation meshsim.Propagation // "" keeps the default topology's mix
	opts        func(*meshsim.Options)
	topo        func(*meshsim.Topology)
	// exact: every span arrives within wait_duration of its request, so
	// recall and the disconnected share must be exact.
	exact bool
}

func accuracyScenarios() []accuracyScenario {
	edge := func(e meshsim.Edge) func(*meshsim.Topology) { return func(t *meshsim.Topology) { t.SetEdge(e) } }
	return []accuracyScenario{
		{name: "default mesh (Istio gateway, reviews forwards x-request-id only, ledger nothing)", exact: true},
		{name: "request_id_only everywhere, concurrency 1", propagation: meshsim.PropagationRequestIDOnly, exact: true,
			opts: func(o *meshsim.Options) { o.Concurrency = 1 }},
		{name: "request_id_only everywhere, concurrency 64, skew 200ms", propagation: meshsim.PropagationRequestIDOnly, exact: true,
			opts: func(o *meshsim.Options) { o.Concurrency = 64; o.MaxSkew = 200 * time.Millisecond; o.Requests = 300 }},
		{name: "no propagation at all", propagation: meshsim.PropagationNone, exact: true},
		{name: "full propagation (control)", propagation: meshsim.PropagationFull, exact: true},
		{name: "Envoy Zipkin defaults: shared span IDs, 64-bit", propagation: meshsim.PropagationRequestIDOnly, exact: true,
			opts: func(o *meshsim.Options) { o.Shared = true; o.Concurrency = 16 }},
		{name: "64/128-bit app spans, shared span IDs", exact: true,
			opts: func(o *meshsim.Options) { o.Shared = true; o.App128 = true }},
		{name: "client pod entry, request_id_only", propagation: meshsim.PropagationRequestIDOnly, exact: true, topo: edge(meshsim.EdgeClientPod)},
		{name: "front proxy (Kourier) entry, default mix", exact: true, topo: edge(meshsim.EdgeFrontProxy)},
		{name: "Envoy OTel tracer entry (ingress, router egress), default mix", exact: true, topo: edge(meshsim.EdgeOTelIngress)},
		{name: "retries 30%, disconnects 10%, concurrency 32", exact: true,
			opts: func(o *meshsim.Options) { o.RetryRate = 0.3; o.DisconnectRate = 0.1; o.Concurrency = 32 }},
		{name: "async calls 10%", exact: true,
			opts: func(o *meshsim.Options) { o.AsyncRate = 0.1 }},
		{name: "late arrival: 5% of flushes 3s late", propagation: meshsim.PropagationRequestIDOnly,
			opts: func(o *meshsim.Options) { o.LateRate = 0.05; o.LateDelay = 3 * time.Second }},
	}
}

type accuracyRow struct {
	name        string
	report      meshsim.Report
	metricShare float64
	late        int64
}

// TestAccuracy runs the mesh simulator through the processor for a matrix of
// scenarios and compares the output with the ground truth. `make accuracy`
// prints the table.
func TestAccuracy(t *testing.T) {
	var rows []accuracyRow
	for _, sc := range accuracyScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			row := runAccuracy(t, sc)
			rows = append(rows, row)
			r := row.report
			assert.Zero(t, r.WrongEdges, "wrong edges: %v", r.Examples)
			assert.Zero(t, r.Lost, "lost spans")
			assert.Zero(t, r.Duplicated, "duplicated spans")
			assert.GreaterOrEqual(t, r.RecallParentFirst(), 0.999, "recall of fragments whose parent arrived first")
			assert.InDelta(t, r.ShareAfter(), row.metricShare, 1e-9, "outcome metric share == the output's disconnected share")
			if sc.exact {
				assert.GreaterOrEqual(t, r.Recall(), 0.999, "recall of recoverable fragments")
				assert.Equal(t, r.DisconnectedTruth, r.DisconnectedAfter, "disconnected traces after == ground truth")
				assert.Equal(t, r.TracesTruth, r.TracesAfter, "traces after == ground truth")
				assert.InDelta(t, r.ShareTruth(), row.metricShare, 1e-9, "outcome metric share == ground truth")
			}
		})
	}
	printAccuracyTable(rows)
}

func runAccuracy(t *testing.T, sc accuracyScenario) accuracyRow {
	topo, err := meshsim.LoadTopology("")
	require.NoError(t, err)
	if sc.propagation != "" {
		topo.SetPropagation(sc.propagation)
	}
	if sc.topo != nil {
		sc.topo(topo)
	}
	opts := meshsim.DefaultOptions()
	if sc.opts != nil {
		sc.opts(&opts)
	}
	res := meshsim.Run(topo, opts)

	h := newHarness(t, func(c *Config) {
		c.WaitDuration = 2 * time.Second
		c.MaxWait = 30 * time.Second
	})
	h.clock.now = res.Spans[0].Arrival
	for _, batch := range meshsim.Batches(res.Spans, 100*time.Millisecond) {
		at := batch[0].Arrival
		if d := at.Sub(h.clock.Now()); d > 0 {
			h.advance(d)
		}
		td, err := meshsim.Traces(batch)
		require.NoError(t, err)
		h.sendTraces(td)
	}
	// let the ticker run until everything is due
	for i := 0; i < 100; i++ {
		h.advance(100 * time.Millisecond)
	}
	h.shutdown()

	out := meshsim.FromTraces(h.sink.AllTraces()...)
	row := accuracyRow{name: sc.name, report: meshsim.Evaluate(res.Spans, out)}
	oc := h.outcomes()
	total := oc["connected"] + oc["stitched"] + oc["disconnected"]
	if total > 0 {
		row.metricShare = float64(oc["disconnected"]) / float64(total)
	}
	row.late = h.counter("processor_tracestitch_late_spans")
	return row
}

func printAccuracyTable(rows []accuracyRow) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| scenario | spans | fragments | recoverable | restored | wrong edges | recall | recall, parent first | unseen | disconnected before | after | ground truth | metric | late spans |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		x := r.report
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %.2f%% | %.2f%% | %d | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %d |\n",
			r.name, x.Spans, x.Fragments, x.Recoverable, x.Restored, x.WrongEdges, 100*x.Recall(), 100*x.RecallParentFirst(), x.Unseen,
			100*x.ShareBefore(), 100*x.ShareAfter(), 100*x.ShareTruth(), 100*r.metricShare, r.late)
	}
	fmt.Fprint(os.Stdout, b.String())
}
