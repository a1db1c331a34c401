//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/internal/stack"
	"github.com/tracestitch/tracestitch/meshsim"
)

// Flood parameters: the collector's memory_limiter bound, tracestitch's
// buffer, the flood (10× the buffer) and the backend's pace.
const (
	floodLimitMiB     = 150
	floodSpikeMiB     = 30
	floodMaxBuffered  = 5_000
	floodSpans        = 10 * floodMaxBuffered
	floodSinkPerSpan  = 2 * time.Millisecond // per span and exporter consumer
	floodSenders      = 8
	floodPostSpans    = 100
	floodRSSAllowance = 128 << 20 // what a collector holds beside the heap memory_limiter watches: code, stacks, garbage not yet collected
)

// TestFloodUnderMemoryLimit sends 10× max_buffered_spans as fast as the
// collector takes them to a backend slower than the senders: memory_limiter
// bounds the collector's memory, the senders see refusals, and every span
// is in the backend, refused to its sender or counted as dropped.
func TestFloodUnderMemoryLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sink, err := stack.StartSink(floodSinkPerSpan)
	require.NoError(t, err)
	t.Cleanup(sink.Close)
	ports, err := stack.FreePorts(2)
	require.NoError(t, err)
	config, err := filepath.Abs("flood.yaml")
	require.NoError(t, err)
	bin, err := filepath.Abs(envOr("COLLECTOR_BIN", "../build/otelcol-tracestitch"))
	require.NoError(t, err)
	p, err := stack.Launch("collector", bin, config, filepath.Join(t.TempDir(), "collector.log"), map[string]string{
		"COLLECTOR_ZIPKIN_PORT": ports[0], "COLLECTOR_METRICS_PORT": ports[1], "SINK_URL": sink.URL,
		"LIMIT_MIB": strconv.Itoa(floodLimitMiB), "SPIKE_MIB": strconv.Itoa(floodSpikeMiB),
		"MAX_BUFFERED_SPANS": strconv.Itoa(floodMaxBuffered),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = p.Terminate(time.Minute)
		if t.Failed() {
			t.Logf("--- collector (tail)\n%s", p.Tail(6000))
		}
	})
	metricsURL := "http://127.0.0.1:" + ports[1] + "/metrics"
	require.NoError(t, stack.WaitHTTP(ctx, metricsURL, time.Minute))
	idleRSS, err := p.RSS()
	require.NoError(t, err)

	topo, err := meshsim.LoadTopology("")
	require.NoError(t, err)
	opts := meshsim.DefaultOptions()
	opts.Start, opts.Requests = time.Now(), floodSpans/13+1
	var posts []stack.Post
	sent := 0
	for chunk := range slices.Chunk(meshsim.Run(topo, opts).Spans, floodPostSpans) {
		b, err := meshsim.ZipkinJSON(chunk)
		require.NoError(t, err)
		n := stack.CountZipkinSpans(b)
		if n == 0 || sent >= floodSpans {
			continue
		}
		posts = append(posts, stack.Post{Receiver: "zipkin", ContentType: "application/json", Body: b, Spans: n})
		sent += n
	}

	stopRSS := stack.PeakRSS(p)
	start := time.Now()
	refusedSpans, statuses := stack.PostAll(ctx, map[string]string{"zipkin": "http://127.0.0.1:" + ports[0] + "/api/v2/spans"}, posts, floodSenders)
	refused, accepted := int64(refusedSpans), int64(sent-refusedSpans)
	floodTook := time.Since(start)

	dropped := func(m stack.Metrics) float64 {
		return m.Sum("otelcol_processor_tracestitch_spans_dropped") +
			m.Sum("otelcol_exporter_send_failed_spans") + m.Sum("otelcol_exporter_enqueue_failed_spans")
	}
	var m stack.Metrics
	require.Eventually(t, func() bool {
		m, err = stack.Scrape(ctx, metricsURL)
		return err == nil && float64(sink.Spans())+dropped(m) >= float64(accepted)
	}, 4*time.Minute, 250*time.Millisecond, "every accepted span reached the backend or was counted as dropped")
	peakRSS := stopRSS()

	bound := int64(floodLimitMiB<<20) + floodRSSAllowance
	t.Logf("flood: %d spans in %d POSTs from %d senders in %v; accepted %d, refused %d (HTTP status → POSTs %v); in the backend %d, counted dropped %.0f (tracestitch %.0f, exporter %.0f); traces released early by max_buffered_spans %.0f; memory_limiter refused %.0f; RSS idle %.0f MiB, peak %.0f MiB (limit_mib %d, bound %d MiB)",
		sent, len(posts), floodSenders, floodTook.Round(time.Millisecond), accepted, refused, statuses, sink.Spans(), dropped(m),
		m.Sum("otelcol_processor_tracestitch_spans_dropped"), m.Sum("otelcol_exporter_send_failed_spans")+m.Sum("otelcol_exporter_enqueue_failed_spans"),
		m.Sum("otelcol_processor_tracestitch_traces_evicted"), m.Sum("otelcol_processor_memory_limiter_refused_spans"), float64(idleRSS)/(1<<20), float64(peakRSS)/(1<<20), floodLimitMiB, bound>>20)

	assert.Equal(t, float64(sent), float64(sink.Spans())+float64(refused)+dropped(m), "every span is in the backend, refused to its sender or counted as dropped")
	assert.Positive(t, refused, "the senders saw refusals")
	assert.Equal(t, float64(refused), m.Sum("otelcol_processor_memory_limiter_refused_spans"), "memory_limiter refused what the senders saw refused")
	assert.Equal(t, float64(refused), m.Sum("otelcol_receiver_refused_spans"), "the receiver refused what the senders saw refused")
	assert.LessOrEqual(t, peakRSS, bound, "RSS stays under limit_mib plus the allowance")
	assert.Equal(t, float64(accepted), m.Sum("otelcol_receiver_accepted_spans"), "the receiver's count of accepted spans is the senders'")
}
