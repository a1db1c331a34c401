//go:build e2e

// Package scale runs simulator traffic through tracestitch scaled out on
// loopback: a front collector routing by trace ID to two instances that
// each run a key stage and a stitch stage, beside one collector doing both
// and beside two instances routed by trace ID alone; and it stops one
// instance mid-run. Run with `make e2e-scale`.
package scale

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tracestitch/tracestitch/internal/stack"
	"github.com/tracestitch/tracestitch/meshsim"
)

// env starts processes for one test and stops them when it ends, printing
// the tail of every log if the test failed.
type env struct {
	t            *testing.T
	ctx          context.Context
	logDir       string
	collectorBin string
	jaegerBin    string
	procs        []*stack.Proc
}

func newEnv(t *testing.T) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	bin := func(key, def string) string {
		p := os.Getenv(key)
		if p == "" {
			p = def
		}
		abs, err := filepath.Abs(p)
		require.NoError(t, err)
		return abs
	}
	e := &env{
		t: t, ctx: ctx, logDir: t.TempDir(),
		collectorBin: bin("COLLECTOR_BIN", "../../build/otelcol-tracestitch"),
		jaegerBin:    bin("JAEGER_BIN", "../../bin/jaeger"),
	}
	t.Cleanup(func() {
		for i := len(e.procs) - 1; i >= 0; i-- {
			_ = e.procs[i].Terminate(30 * time.Second)
		}
		if t.Failed() {
			for _, p := range e.procs {
				t.Logf("--- %s (tail)\n%s", p.Name, p.Tail(4000))
			}
		}
	})
	return e
}

// ports are n free loopback ports.
func (e *env) ports(n int) []string {
	p, err := stack.FreePorts(n)
	require.NoError(e.t, err)
	return p
}

// launch starts a process and waits until ready answers.
func (e *env) launch(name, bin, config string, vars map[string]string, ready string) *stack.Proc {
	e.t.Helper()
	config, err := filepath.Abs(config)
	require.NoError(e.t, err)
	p, err := stack.Launch(name, bin, config, filepath.Join(e.logDir, name+".log"), vars)
	require.NoError(e.t, err)
	e.procs = append(e.procs, p)
	require.NoError(e.t, stack.WaitHTTP(e.ctx, ready, 60*time.Second), "%s did not start:\n%s", name, p.Tail(4000))
	return p
}

// jaeger is one Jaeger with its Zipkin port.
type jaeger struct {
	stack.Jaeger
	zipkinPort string
}

func (e *env) jaeger(name string) jaeger {
	p := e.ports(3)
	j := jaeger{Jaeger: stack.Jaeger{URL: "http://127.0.0.1:" + p[0]}, zipkinPort: p[2]}
	e.launch(name, e.jaegerBin, "../jaeger.yaml",
		map[string]string{"JAEGER_QUERY_PORT": p[0], "JAEGER_QUERY_GRPC_PORT": p[1], "JAEGER_ZIPKIN_PORT": p[2]},
		j.URL+"/api/services")
	return j
}

// collector is a running collector and its Prometheus endpoint.
type collector struct {
	*stack.Proc
	metricsURL string
	env        *env
}

func (e *env) collector(name, config string, vars map[string]string) *collector {
	port := e.ports(1)[0]
	vars["METRICS_PORT"] = port
	vars["COLLECTOR_METRICS_PORT"] = port
	url := "http://127.0.0.1:" + port + "/metrics"
	return &collector{Proc: e.launch(name, e.collectorBin, config, vars, url), metricsURL: url, env: e}
}

// restart starts the collector again and waits until it answers.
func (c *collector) restart() {
	require.NoError(c.env.t, c.Start())
	require.NoError(c.env.t, stack.WaitHTTP(c.env.ctx, c.metricsURL, 60*time.Second), "%s did not restart", c.Name)
}

func (c *collector) scrape() stack.Metrics {
	m, err := stack.Scrape(c.env.ctx, c.metricsURL)
	require.NoError(c.env.t, err, "scrape %s", c.Name)
	return m
}

// instance is one member of a two-stage tier: a key stage and a stitch
// stage, each its own collector, as two containers of one pod.
type instance struct {
	key, stitch *collector
}

// stop stops the key stage, then the stitch stage, as Kubernetes stops a
// pod's main container before its native sidecar.
func (i instance) stop() error {
	if err := i.key.Terminate(time.Minute); err != nil {
		return err
	}
	return i.stitch.Terminate(time.Minute)
}

func (i instance) kill() {
	i.key.Kill()
	i.stitch.Kill()
}

func (i instance) restart() {
	i.stitch.restart()
	i.key.restart()
}

// subject is one way of running tracestitch: where traffic enters, the
// collectors that stitch, the processor whose metrics count, the backend.
type subject struct {
	name       string
	entry      *meshsim.Sender
	front      *collector // nil when the entry is a stitching collector
	instances  []instance // of a two-stage tier
	stitchers  []*collector
	stitchProc string // processor="…" label of the stitching processor
	backend    jaeger
}

// all is every collector of the subject, front first.
func (s *subject) all() []*collector {
	var all []*collector
	if s.front != nil {
		all = append(all, s.front)
	}
	for _, i := range s.instances {
		all = append(all, i.key)
	}
	return append(all, s.stitchers...)
}

// single is one collector with the reference configuration.
func (e *env) single(name string) *subject {
	j := e.jaeger(name + "-jaeger")
	p := e.ports(2)
	c := e.collector(name, "../collector.yaml", map[string]string{
		"COLLECTOR_ZIPKIN_PORT": p[0], "COLLECTOR_OTLP_HTTP_PORT": p[1], "JAEGER_ZIPKIN_PORT": j.zipkinPort,
	})
	return &subject{
		name: name, stitchers: []*collector{c}, stitchProc: "tracestitch", backend: j,
		entry: &meshsim.Sender{ZipkinURL: "http://127.0.0.1:" + p[0] + "/api/v2/spans", OTLPURL: "http://127.0.0.1:" + p[1] + "/v1/traces"},
	}
}

// twoStage is a front collector routing by trace ID to the key stages of
// two instances, which route by stitch key to their stitch stages.
func (e *env) twoStage(name string) *subject {
	j := e.jaeger(name + "-jaeger")
	keyPorts, stitchPorts := e.ports(2), e.ports(2)
	s := &subject{name: name, stitchProc: "tracestitch", backend: j}
	for i := range 2 {
		stitch := e.collector(fmt.Sprintf("%s-%d-stitch", name, i+1), "stitch.yaml", map[string]string{
			"STITCH_GRPC_PORT": stitchPorts[i], "JAEGER_ZIPKIN_PORT": j.zipkinPort,
		})
		key := e.collector(fmt.Sprintf("%s-%d-key", name, i+1), "key.yaml", map[string]string{
			"KEY_GRPC_PORT": keyPorts[i], "KEYED_PORT_1": stitchPorts[0], "KEYED_PORT_2": stitchPorts[1],
		})
		s.instances = append(s.instances, instance{key: key, stitch: stitch})
		s.stitchers = append(s.stitchers, stitch)
	}
	s.front, s.entry = e.front(name+"-front", keyPorts)
	return s
}

// traceIDRouted is a front collector routing by trace ID to two instances
// that stitch what they get, without a key stage.
func (e *env) traceIDRouted(name string) *subject {
	j := e.jaeger(name + "-jaeger")
	ports := e.ports(2)
	s := &subject{name: name, stitchProc: "tracestitch", backend: j}
	for i := range 2 {
		s.stitchers = append(s.stitchers, e.collector(fmt.Sprintf("%s-%d", name, i+1), "stitch.yaml", map[string]string{
			"STITCH_GRPC_PORT": ports[i], "JAEGER_ZIPKIN_PORT": j.zipkinPort,
		}))
	}
	s.front, s.entry = e.front(name+"-front", ports)
	return s
}

func (e *env) front(name string, tier []string) (*collector, *meshsim.Sender) {
	p := e.ports(2)
	c := e.collector(name, "front.yaml", map[string]string{
		"FRONT_ZIPKIN_PORT": p[0], "FRONT_OTLP_HTTP_PORT": p[1], "TIER_PORT_1": tier[0], "TIER_PORT_2": tier[1],
	})
	return c, &meshsim.Sender{ZipkinURL: "http://127.0.0.1:" + p[0] + "/api/v2/spans", OTLPURL: "http://127.0.0.1:" + p[1] + "/v1/traces"}
}

// scrapeStitchers scrapes the subject's running stitching collectors.
func (s *subject) scrapeStitchers() []stack.Metrics {
	var out []stack.Metrics
	for _, c := range s.stitchers {
		if c.Alive() {
			out = append(out, c.scrape())
		}
	}
	return out
}

// sum adds a metric of the stitching processors over scrapes of the
// stitching collectors.
func (s *subject) sum(scrapes []stack.Metrics, name string, labels ...string) float64 {
	var total float64
	for _, m := range scrapes {
		total += m.Sum(name, append(labels, fmt.Sprintf("processor=%q", s.stitchProc))...)
	}
	return total
}

// awaitReleased waits until the stitching processors have released n spans.
func (s *subject) awaitReleased(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return s.sum(s.scrapeStitchers(), "otelcol_processor_tracestitch_spans_released") >= float64(n)
	}, 2*time.Minute, 250*time.Millisecond, "%s released %d spans", s.name, n)
}

// stored fetches every span Jaeger holds under the trace IDs the input
// used (the processor only moves spans into trace IDs of its input); it
// waits until the count is stable for two seconds or reaches want.
func (s *subject) stored(ctx context.Context, t *testing.T, spans []*meshsim.Span, want int) []meshsim.OutSpan {
	t.Helper()
	ids := map[string]bool{}
	var order []string
	for _, sp := range spans {
		if id := sp.Trace32(); !ids[id] {
			ids[id] = true
			order = append(order, id)
		}
	}
	var out []meshsim.OutSpan
	last, stableSince := -1, time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out = out[:0]
		for _, id := range order {
			got, err := s.backend.Trace(ctx, id)
			if errors.Is(err, stack.ErrTraceNotFound) {
				continue
			}
			require.NoError(t, err)
			out = append(out, got...)
		}
		if len(out) >= want {
			return out
		}
		if len(out) != last {
			last, stableSince = len(out), time.Now()
		}
		if time.Since(stableSince) > 2*time.Second || time.Now().After(deadline) {
			return out
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// counts are what a subject's metrics say.
type counts struct {
	stitchParentID, stitchRequestID, ambiguous float64
	connected, stitched, disconnected, blamed  float64
	lateSpans, dropped                         float64
}

func (s *subject) counts() counts {
	m := s.scrapeStitchers()
	const p = "otelcol_processor_tracestitch_"
	return counts{
		stitchParentID:  s.sum(m, p+"stitches", `method="parent_id"`),
		stitchRequestID: s.sum(m, p+"stitches", `method="request_id"`),
		ambiguous:       s.sum(m, p+"ambiguous"),
		connected:       s.sum(m, p+"traces", `outcome="connected"`),
		stitched:        s.sum(m, p+"traces", `outcome="stitched"`),
		disconnected:    s.sum(m, p+"traces", `outcome="disconnected"`),
		blamed:          s.sum(m, p+"broken_propagation"),
		lateSpans:       s.sum(m, p+"late_spans"),
		dropped:         s.sum(m, p+"spans_dropped"),
	}
}

func (c counts) traces() float64 { return c.connected + c.stitched + c.disconnected }

// exporterLoss is what the subject's collectors counted as not delivered
// by their exporters and receivers.
func (s *subject) exporterLoss() float64 {
	var n float64
	for _, c := range s.all() {
		if !c.Alive() {
			continue
		}
		m := c.scrape()
		n += m.Sum("otelcol_exporter_send_failed_spans") + m.Sum("otelcol_exporter_enqueue_failed_spans") +
			m.Sum("otelcol_receiver_refused_spans")
	}
	return n
}

// cpu is the CPU time the subject's collectors used so far.
func (s *subject) cpu(t *testing.T) time.Duration {
	var procs []*stack.Proc
	for _, c := range s.all() {
		procs = append(procs, c.Proc)
	}
	d, err := stack.TotalCPU(procs...)
	require.NoError(t, err)
	return d
}

// row is one line of the comparison table.
func row(name string, r meshsim.Report, c counts, stored int) string {
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %.2f%% | %.0f | %.0f | %.0f | %.0f / %.0f / %.0f | %.0f | %.1f%% | %.1f%% |",
		name, r.Spans, stored, r.Restored, r.WrongEdges, 100*r.Recall(),
		c.stitchParentID, c.stitchRequestID, c.ambiguous, c.connected, c.stitched, c.disconnected, c.blamed,
		100*r.ShareAfter(), 100*r.ShareTruth())
}

const tableHeader = "| subject | spans sent | in Jaeger | fragments restored | wrong edges | recall | stitches parent_id | stitches request_id | ambiguous | connected / stitched / disconnected | blamed | disconnected in Jaeger | ground truth |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"

// logTable prints lines as one block.
func logTable(t *testing.T, title string, lines ...string) {
	t.Logf("%s\n%s", title, strings.Join(lines, "\n"))
}
