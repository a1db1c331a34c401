// Command benchpipeline is `make bench-pipeline`: the whole collector, built
// by ocb (bench/pipeline/builder-config.yaml), run as real processes on
// loopback with each subject's processors between a Zipkin/OTLP receiver
// and a Zipkin exporter, fed the calibrated simulator's traffic as fast as
// it takes it. It prints CPU per span from the processes' own accounting,
// peak RSS, spans/s at saturation and spans lost, each against the
// pipeline with no processor.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/tracestitch/tracestitch/internal/stack"
	"github.com/tracestitch/tracestitch/meshsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchpipeline:", err)
		os.Exit(1)
	}
}

// stage is one collector process of a subject.
type stage struct {
	processors string // YAML list
	exporter   string // zipkin, or load_balancing to the next stage
}

type subject struct {
	name   string
	stages []stage // traffic enters the first; the last exports to the sink
	// wait is how long the subject holds the last spans it gets (its
	// processors' wait_duration or timeout, summed over its stages)
	wait time.Duration
}

var subjects = []subject{
	{"no processor", []stage{{"[]", "zipkin"}}, 0},
	{"batch", []stage{{"[batch]", "zipkin"}}, 200 * time.Millisecond},
	{"groupbytrace", []stage{{"[groupbytrace]", "zipkin"}}, time.Second},
	{"tracestitch", []stage{{"[tracestitch]", "zipkin"}}, time.Second},
	{"tracestitch key + stitch stages", []stage{{"[tracestitch/key]", "load_balancing"}, {"[tracestitch]", "zipkin"}}, 2 * time.Second},
}

// input is the traffic of one run, as POSTs.
type input struct {
	name  string
	posts []stack.Post
	spans int
}

func run() error {
	var (
		collector   = flag.String("collector", "build/otelcol-bench", "collector binary (bench distribution)")
		config      = flag.String("config", "bench/pipeline/collector.yaml", "collector config")
		spans       = flag.Int("spans", 100_000, "spans per run")
		rounds      = flag.Int("rounds", 3, "rounds; subjects take turns within a round")
		concurrency = flag.Int("concurrency", 4, "concurrent senders")
		only        = flag.String("subjects", "", "comma-separated subject names (default all)")
		profileDir  = flag.String("profile", "", "if set, write a CPU profile of the first round of each subject on the Zipkin input here")
		logDir      = flag.String("logs", "build/bench-pipeline-logs", "collector logs")
	)
	flag.Parse()
	ctx := context.Background()
	inputs, err := makeInputs(*spans)
	if err != nil {
		return err
	}
	var chosen []subject
	for _, s := range subjects {
		if *only == "" || slices.Contains(strings.Split(*only, ","), s.name) {
			chosen = append(chosen, s)
		}
	}
	// The sink decodes nothing: Jaeger would take more CPU than the
	// collector under test on a small machine and set the rate.
	sink, err := stack.StartSink(0)
	if err != nil {
		return err
	}
	defer sink.Close()
	r := &runner{collector: *collector, config: *config, logDir: *logDir, concurrency: *concurrency, sink: sink}
	results := map[string][]measurement{} // input/subject → rounds
	for round := 1; round <= *rounds; round++ {
		for _, in := range inputs {
			for _, s := range chosen {
				profile := ""
				if *profileDir != "" && round == 1 && in.name == inputs[0].name {
					profile = filepath.Join(*profileDir, "pipeline-"+strings.ReplaceAll(s.name, " ", "-")+".pprof")
				}
				m, err := r.measure(ctx, s, in, profile)
				if err != nil {
					return fmt.Errorf("%s, %s, round %d: %w", s.name, in.name, round, err)
				}
				fmt.Fprintf(os.Stderr, "round %d %-32s %-40s %6.1f µs/span %8.0f spans/s (ingest %8.0f) %6.0f MB lost %d refused %d\n",
					round, s.name, in.name, m.cpuPerSpan(), m.rate(), m.ingestRate(), float64(m.rss)/1e6, m.lost, m.refused)
				results[in.name+"/"+s.name] = append(results[in.name+"/"+s.name], m)
			}
		}
	}
	printTable(inputs, chosen, results, *rounds, *spans, *concurrency)
	return nil
}

// makeInputs builds the calibrated simulator's default mesh traffic (an
// Istio gateway; reviews forwards only x-request-id, ledger nothing) and
// encodes it three ways.
func makeInputs(spans int) ([]input, error) {
	topo, err := meshsim.LoadTopology("")
	if err != nil {
		return nil, err
	}
	opts := meshsim.DefaultOptions()
	opts.Start = time.Now()
	opts.Requests = spans/13 + 1
	res := meshsim.Run(topo, opts)
	all := res.Spans
	if len(all) > spans {
		all = all[:spans]
	}
	var inputs []input
	for _, size := range []int{100, 10} {
		in := input{name: fmt.Sprintf("Zipkin JSON + OTLP apps, %d-span POSTs", size)}
		for chunk := range slices.Chunk(all, size) {
			z, err := meshsim.ZipkinJSON(chunk)
			if err != nil {
				return nil, err
			}
			o, err := ptraceotlp.NewExportRequestFromTraces(meshsim.OTLP(chunk)).MarshalProto()
			if err != nil {
				return nil, err
			}
			envoy := stack.CountZipkinSpans(z)
			if envoy > 0 {
				in.posts = append(in.posts, stack.Post{Receiver: "zipkin", ContentType: "application/json", Body: z, Spans: envoy})
			}
			if len(chunk) > envoy {
				in.posts = append(in.posts, stack.Post{Receiver: "otlp", ContentType: "application/x-protobuf", Body: o, Spans: len(chunk) - envoy})
			}
			in.spans += len(chunk)
		}
		inputs = append(inputs, in)
	}
	in := input{name: "OTLP/HTTP, 100-span POSTs"}
	for chunk := range slices.Chunk(all, 100) {
		td, err := meshsim.Traces(chunk)
		if err != nil {
			return nil, err
		}
		b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			return nil, err
		}
		in.posts = append(in.posts, stack.Post{Receiver: "otlp", ContentType: "application/x-protobuf", Body: b, Spans: td.SpanCount()})
		in.spans += td.SpanCount()
	}
	return append(inputs, in), nil
}

// measurement is one subject's run on one input.
type measurement struct {
	spans, refused, lost int
	cpu                  time.Duration
	send                 time.Duration // wall time of the send phase
	// through is the wall time until the sink had every accepted span, less
	// the subject's wait for the last ones
	through time.Duration
	rss     int64 // peak, summed over the subject's processes
}

func (m measurement) cpuPerSpan() float64 {
	return float64(m.cpu.Nanoseconds()) / 1e3 / float64(m.spans)
}

// ingestRate is the accepted spans per second of the send phase.
func (m measurement) ingestRate() float64 { return float64(m.spans-m.refused) / m.send.Seconds() }

// rate is the accepted spans per second until they were all in the sink,
// the subject's wait for its last spans left out.
func (m measurement) rate() float64 { return float64(m.spans-m.refused) / m.through.Seconds() }

type runner struct {
	collector, config, logDir string
	concurrency               int
	sink                      *stack.Sink
}

// measure starts the subject's collectors, sends the input as fast as they
// take it, waits until the sink has every accepted span or nothing moves for
// five seconds, stops the collectors (they flush) and counts.
func (r *runner) measure(ctx context.Context, s subject, in input, profile string) (measurement, error) {
	m := measurement{spans: in.spans}
	procs, entry, pprofURL, err := r.start(ctx, s)
	defer stopAll(procs)
	if err != nil {
		return m, err
	}
	before := r.sink.Spans()
	cpu0, err := stack.TotalCPU(procs...)
	if err != nil {
		return m, err
	}
	stopRSS := stack.PeakRSS(procs...)
	var profDone chan error
	if profile != "" {
		profDone = make(chan error, 1)
		go func() { profDone <- fetchProfile(ctx, pprofURL, profile, 4) }()
	}
	start := time.Now()
	m.refused, _ = stack.PostAll(ctx, entry, in.posts, r.concurrency)
	m.send = time.Since(start)
	want := int64(in.spans - m.refused)
	last, since := int64(-1), time.Now()
	for r.sink.Spans()-before < want && time.Since(since) < 5*time.Second {
		if n := r.sink.Spans(); n != last {
			last, since = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.through = max(time.Since(start)-s.wait, m.send)
	cpu1, err := stack.TotalCPU(procs...)
	if err != nil {
		return m, err
	}
	m.rss = stopRSS()
	m.cpu = cpu1 - cpu0
	if err := stopAll(procs); err != nil {
		return m, err
	}
	m.lost = int(want - (r.sink.Spans() - before))
	if profDone != nil {
		if err := <-profDone; err != nil {
			return m, err
		}
	}
	return m, nil
}

// start launches the subject's stages, the last first, and returns the
// entry's URLs by receiver ("zipkin", "otlp") and the entry's pprof URL.
func (r *runner) start(ctx context.Context, s subject) ([]*stack.Proc, map[string]string, string, error) {
	var procs []*stack.Proc
	next := ""
	var entry map[string]string
	var pprofURL string
	for i := len(s.stages) - 1; i >= 0; i-- {
		st := s.stages[i]
		ports, err := stack.FreePorts(5)
		if err != nil {
			return procs, nil, "", err
		}
		env := map[string]string{
			"ZIPKIN_PORT": ports[0], "OTLP_HTTP_PORT": ports[1], "OTLP_GRPC_PORT": ports[2], "METRICS_PORT": ports[3], "PPROF_PORT": ports[4],
			"PROCESSORS": st.processors, "EXPORTER": st.exporter, "SINK_URL": r.sink.URL, "NEXT_STAGE_PORT": next,
		}
		if next == "" {
			// the last stage exports to the sink; its unused resolver still
			// needs an endpoint
			env["NEXT_STAGE_PORT"] = "1"
		}
		name := fmt.Sprintf("%s-%d", strings.ReplaceAll(s.name, " ", "-"), i)
		p, err := stack.Launch(name, r.collector, r.config, filepath.Join(r.logDir, name+".log"), env)
		if err != nil {
			return procs, nil, "", err
		}
		procs = append(procs, p)
		if err := stack.WaitHTTP(ctx, "http://127.0.0.1:"+ports[3]+"/metrics", time.Minute); err != nil {
			return procs, nil, "", fmt.Errorf("%s did not start: %w\n%s", name, err, p.Tail(2000))
		}
		next = ports[2]
		entry = map[string]string{
			"zipkin": "http://127.0.0.1:" + ports[0] + "/api/v2/spans",
			"otlp":   "http://127.0.0.1:" + ports[1] + "/v1/traces",
		}
		pprofURL = "http://127.0.0.1:" + ports[4]
	}
	return procs, entry, pprofURL, nil
}

// stopAll stops the stages entry first (start put them last first), so
// that each stage's flush finds the next one up.
func stopAll(procs []*stack.Proc) error {
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Terminate(time.Minute); err != nil {
			return err
		}
	}
	return nil
}

func fetchProfile(ctx context.Context, base, path string, seconds int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, seconds), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func median(ms []measurement, f func(measurement) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func printTable(inputs []input, chosen []subject, results map[string][]measurement, rounds, spans, concurrency int) {
	fmt.Printf("\nWhole collector, %d spans per run, %d concurrent senders, median of %d rounds (CPU: the collectors' own user+system time; RSS: peak, summed over a subject's processes; spans/s at saturation: until the sink had them all, the subject's wait for its last spans left out; ingest: while sending)\n", spans, concurrency, rounds)
	for _, in := range inputs {
		fmt.Printf("\n%s\n\n| subject | CPU µs/span | CPU vs no processor | peak RSS MB | spans/s at saturation | spans/s vs no processor | ingest spans/s | spans lost | spans refused |\n|---|---|---|---|---|---|---|---|---|\n", in.name)
		base := results[in.name+"/no processor"]
		for _, s := range chosen {
			ms := results[in.name+"/"+s.name]
			cpu := median(ms, measurement.cpuPerSpan)
			rate := median(ms, measurement.rate)
			var lost, refused int
			for _, m := range ms {
				lost += m.lost
				refused += m.refused
			}
			cpuRatio, rateRatio := "", ""
			if len(base) > 0 {
				cpuRatio = fmt.Sprintf("%.2f×", cpu/median(base, measurement.cpuPerSpan))
				rateRatio = fmt.Sprintf("%.2f×", rate/median(base, measurement.rate))
			}
			fmt.Printf("| %s | %.1f | %s | %.0f | %.0f | %s | %.0f | %d | %d |\n", s.name, cpu, cpuRatio,
				median(ms, func(m measurement) float64 { return float64(m.rss) / 1e6 }), rate, rateRatio,
				median(ms, measurement.ingestRate), lost, refused)
		}
	}
}
