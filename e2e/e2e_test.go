//go:build e2e

// Package e2e runs simulator traffic through the ocb-built collector into
// Jaeger (Zipkin API) and checks the stored traces against the ground truth.
// Run with `make e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/internal/stack"
	"github.com/tracestitch/tracestitch/meshsim"
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	logs := t.TempDir()
	abs := func(p string) string { a, err := filepath.Abs(p); require.NoError(t, err); return a }
	st, err := stack.Start(ctx, stack.Options{
		CollectorBin:    abs(envOr("COLLECTOR_BIN", "../build/otelcol-tracestitch")),
		CollectorConfig: abs("collector.yaml"),
		JaegerBin:       abs(envOr("JAEGER_BIN", "../bin/jaeger")),
		JaegerConfig:    abs("jaeger.yaml"),
		LogDir:          logs,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		st.Stop()
		if t.Failed() {
			for _, f := range []string{"collector.log", "jaeger.log"} {
				b, _ := os.ReadFile(filepath.Join(logs, f))
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("--- %s (tail)\n%s", f, b)
			}
		}
	})

	topo, err := meshsim.LoadTopology("")
	require.NoError(t, err)
	opts := meshsim.DefaultOptions()
	opts.Start = time.Now()
	opts.Requests = 60
	res := meshsim.Run(topo, opts)

	sender := &meshsim.Sender{ZipkinURL: st.ZipkinURL, OTLPURL: st.OTLPURL}
	sent, err := sender.Replay(ctx, res.Spans, opts.FlushInterval)
	require.NoError(t, err)
	require.Equal(t, len(res.Spans), sent)

	// The collector releases everything wait_duration (2s) after the last span.
	var m stack.Metrics
	require.Eventually(t, func() bool {
		m, err = st.Metrics(ctx)
		return err == nil && m.Sum("otelcol_processor_tracestitch_spans_released") == float64(len(res.Spans))
	}, 60*time.Second, 200*time.Millisecond, "collector released every span")

	want := meshsim.ExpectedTraceIDs(res.Spans)
	var out []meshsim.OutSpan
	require.Eventually(t, func() bool {
		out = out[:0]
		for _, id := range want {
			spans, err := st.Trace(ctx, id)
			if err != nil {
				return false
			}
			out = append(out, spans...)
		}
		return len(out) >= len(res.Spans)
	}, 60*time.Second, 500*time.Millisecond, "Jaeger stored every span under the expected trace IDs")

	r := meshsim.Evaluate(res.Spans, out)
	t.Logf("e2e: %d spans, %d fragments, %d recoverable, %d restored, %d wrong edges, recall %.2f%%, disconnected before %.1f%% after %.1f%% truth %.1f%%",
		r.Spans, r.Fragments, r.Recoverable, r.Restored, r.WrongEdges, 100*r.Recall(), 100*r.ShareBefore(), 100*r.ShareAfter(), 100*r.ShareTruth())
	assert.Zero(t, r.WrongEdges, "wrong edges: %v", r.Examples)
	assert.Zero(t, r.Lost)
	assert.Zero(t, r.Duplicated)
	assert.GreaterOrEqual(t, r.Recall(), 0.999)
	assert.Equal(t, r.TracesTruth, r.TracesAfter)
	assert.Equal(t, r.DisconnectedTruth, r.DisconnectedAfter)

	outcome := func(o string) float64 {
		return m.Sum("otelcol_processor_tracestitch_traces", fmt.Sprintf("outcome=%q", o))
	}
	total := outcome("connected") + outcome("stitched") + outcome("disconnected")
	assert.Equal(t, float64(r.TracesTruth), total, "traces{outcome} total == ground truth")
	assert.Equal(t, float64(r.DisconnectedTruth), outcome("disconnected"), "traces{outcome=disconnected} == ground truth")
	assert.Positive(t, m.Sum("otelcol_processor_tracestitch_stitches", `method="request_id"`))
}
