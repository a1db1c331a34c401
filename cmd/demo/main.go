// Command demo is `make run`: it starts Jaeger and the ocb-built collector
// on loopback, sends simulated mesh traffic with broken propagation through
// the collector, prints the disconnected share before and after stitching
// and where to look at the traces, then keeps everything running until
// interrupted (or -hold elapses).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tracestitch/tracestitch/internal/stack"
	"github.com/tracestitch/tracestitch/meshsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		collector = flag.String("collector", "build/otelcol-tracestitch", "collector binary")
		jaeger    = flag.String("jaeger", "bin/jaeger", "jaeger binary")
		requests  = flag.Int("requests", 200, "simulated requests")
		hold      = flag.Duration("hold", 10*time.Minute, "keep the stack up this long after the report (or until interrupted)")
		logs      = flag.String("logs", "build/demo-logs", "directory for collector.log and jaeger.log")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := stack.Start(ctx, stack.Options{
		CollectorBin: *collector, CollectorConfig: "e2e/collector.yaml",
		JaegerBin: *jaeger, JaegerConfig: "e2e/jaeger.yaml", LogDir: *logs,
	})
	if err != nil {
		return err
	}
	defer st.Stop()
	fmt.Printf("Jaeger query API:   %s\ncollector Zipkin:   %s\ncollector OTLP:     %s\ncollector metrics:  %s\nlogs:               %s\n\n",
		st.Jaeger.URL, st.ZipkinURL, st.OTLPURL, st.MetricsURL, *logs)

	topo, err := meshsim.LoadTopology("")
	if err != nil {
		return err
	}
	opts := meshsim.DefaultOptions()
	opts.Start, opts.Requests = time.Now(), *requests
	res := meshsim.Run(topo, opts)
	fmt.Printf("sending %d spans of %d requests through an Istio ingress gateway (bookinfo + a shop chain; reviews forwards only x-request-id, ledger forwards nothing)...\n", len(res.Spans), opts.Requests)
	sender := &meshsim.Sender{ZipkinURL: st.ZipkinURL, OTLPURL: st.OTLPURL}
	if _, err := sender.Replay(ctx, res.Spans, opts.FlushInterval); err != nil {
		return err
	}
	var m stack.Metrics
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if m, err = st.Metrics(ctx); err == nil && m.Sum("otelcol_processor_tracestitch_spans_released") >= float64(len(res.Spans)) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := meshsim.Evaluate(res.Spans, nil)
	oc := func(o string) float64 {
		return m.Sum("otelcol_processor_tracestitch_traces", fmt.Sprintf("outcome=%q", o))
	}
	total := oc("connected") + oc("stitched") + oc("disconnected")
	fmt.Printf("\ndisconnected share before stitching: %5.1f%% (%d of %d trace IDs)\n", 100*r.ShareBefore(), r.DisconnectedBefore, r.TracesBefore)
	if total > 0 {
		fmt.Printf("disconnected share after stitching:  %5.1f%% (%.0f of %.0f traces; %.0f stitched, %.0f connected)\n",
			100*oc("disconnected")/total, oc("disconnected"), total, oc("stitched"), oc("connected"))
	}
	fmt.Printf("ideal (ground truth):                %5.1f%%\n\nbroken propagation by service:\n", 100*r.ShareTruth())
	const blame = "otelcol_processor_tracestitch_broken_propagation"
	for k, v := range m {
		if labels, ok := strings.CutPrefix(k, blame); ok {
			fmt.Printf("  %s %.0f\n", labels, v)
		}
	}
	// Show one request as Jaeger stored it (the Jaeger built from Go
	// modules serves the query API; its web UI assets are not included).
	for _, s := range res.Spans {
		if s.TrueParent != "" || s.Request != 0 {
			continue
		}
		id := s.Trace32()
		for i := 0; i < 50; i++ {
			spans, err := st.Trace(ctx, id)
			if err == nil && len(spans) > 0 {
				fmt.Printf("\nrequest 0 as stored in Jaeger (%s/api/traces/%s):\n\n%s", st.Jaeger.URL, id, stack.Tree(spans))
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		break
	}
	fmt.Printf("\nmore: %s/api/traces?service=istio-ingressgateway.istio-system&limit=20 (spans carry tracestitch.stitched_by and tracestitch.original_trace_id)\n", st.Jaeger.URL)
	fmt.Printf("\nthe stack stays up for %v (Ctrl-C stops it sooner)\n", *hold)
	select {
	case <-ctx.Done():
	case <-time.After(*hold):
	}
	return nil
}
