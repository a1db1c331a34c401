package tracestitch

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.yaml.in/yaml/v3"

	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadatatest"
)

// fakeClock is the processor's clock in tests: time moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness drives one processor without its ticker: time and releases are
// explicit, and it checks that every span that went in came out.
type harness struct {
	t     *testing.T
	p     *tracestitchProcessor
	sink  *consumertest.TracesSink
	clock *fakeClock
	tel   *componenttest.Telemetry
	in    int
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.WaitDuration = time.Second
	cfg.MaxWait = 10 * time.Second
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	sink := new(consumertest.TracesSink)
	p, err := newProcessor(metadatatest.NewSettings(tel), cfg, sink)
	require.NoError(t, err)
	clock := &fakeClock{now: time.Unix(1_764_010_000, 0)}
	p.now = clock.Now
	return &harness{t: t, p: p, sink: sink, clock: clock, tel: tel}
}

func (h *harness) send(spans ...ts) {
	h.t.Helper()
	h.sendTraces(build(h.t, spans...))
}

func (h *harness) sendTraces(td ptrace.Traces) {
	h.t.Helper()
	h.in += td.SpanCount()
	require.NoError(h.t, h.p.ConsumeTraces(context.Background(), td))
}

// advance moves the clock and runs one release pass, as the ticker would.
func (h *harness) advance(d time.Duration) {
	h.clock.Add(d)
	h.p.releaseDue(context.Background())
}

// shutdown flushes and checks conservation: spans in == spans out.
func (h *harness) shutdown() {
	h.t.Helper()
	require.NoError(h.t, h.p.Shutdown(context.Background()))
	require.Equal(h.t, h.in, h.sink.SpanCount(), "every span that entered must leave")
}

func (h *harness) out() []outSpan { return flatten(h.sink.AllTraces()...) }

// knownMetrics are the telemetry metrics metadata.yaml declares.
var knownMetrics = sync.OnceValues(func() (map[string]bool, error) {
	b, err := os.ReadFile("metadata.yaml")
	if err != nil {
		return nil, err
	}
	var md struct {
		Telemetry struct {
			Metrics map[string]any `yaml:"metrics"`
		} `yaml:"telemetry"`
	}
	if err := yaml.Unmarshal(b, &md); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for n := range md.Telemetry.Metrics {
		names[n] = true
	}
	return names, nil
})

// counter returns the sum of an int64 counter's data points whose
// attributes are attrs and the processor's ID (all of them without attrs).
// A name metadata.yaml does not declare fails the test; a declared counter
// nothing was recorded on yet is 0.
func (h *harness) counter(name string, attrs ...attribute.KeyValue) int64 {
	h.t.Helper()
	known, err := knownMetrics()
	require.NoError(h.t, err)
	require.True(h.t, known[name], "%s is not a metric of this component", name)
	m, err := h.tel.GetMetric("otelcol_" + name)
	if err != nil {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(h.t, ok, "%s is not an int64 sum", name)
	want := attribute.NewSet(append(attrs, h.p.attrs.id)...)
	var total int64
	for _, dp := range sum.DataPoints {
		if len(attrs) == 0 || dp.Attributes.Equals(&want) {
			total += dp.Value
		}
	}
	return total
}

func (h *harness) outcomes() map[string]int64 {
	got := map[string]int64{}
	for _, o := range []string{"connected", "stitched", "disconnected"} {
		if n := h.counter("processor_tracestitch_traces", attribute.String("outcome", o)); n > 0 {
			got[o] = n
		}
	}
	return got
}
