// Command meshsim generates Envoy-mesh spans with ground truth, writes them
// to files and/or sends them to a collector (Zipkin HTTP and OTLP/HTTP).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/meshsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "meshsim:", err)
		os.Exit(1)
	}
}

func run() error {
	def := meshsim.DefaultOptions()
	var (
		topoPath    = flag.String("topology", "", "topology YAML (default: bookinfo + chain + fan-out)")
		propagation = flag.String("propagation", "", "override every non-entry service: full, request_id_only, none")
		requests    = flag.Int("requests", def.Requests, "number of requests")
		concurrency = flag.Int("concurrency", def.Concurrency, "requests in flight on average")
		rate        = flag.Float64("rate", 0, "requests per second (with -duration: replaces -requests and -concurrency)")
		duration    = flag.Duration("duration", 0, "with -rate: how long to generate traffic for")
		seed        = flag.Int64("seed", def.Seed, "random seed")
		shared      = flag.Bool("shared", def.Shared, "Envoy's Zipkin defaults: shared client/server span IDs, 64-bit trace IDs (default: Istio's, distinct span IDs, 128-bit)")
		edge        = flag.String("edge", "", "how requests enter: istio-gateway, client-pod, front-proxy, otel-ingress, service (default: the topology's)")
		disconnects = flag.Float64("disconnects", def.DisconnectRate, "share of calls whose caller disconnects before the answer")
		skew        = flag.Duration("skew", def.MaxSkew, "largest clock skew of a host")
		retries     = flag.Float64("retries", def.RetryRate, "share of calls retried")
		async       = flag.Float64("async", 0, "share of calls that outlive their request")
		late        = flag.Float64("late", 0, "share of reporter flushes that arrive -late-delay late")
		lateDelay   = flag.Duration("late-delay", 3*time.Second, "delay of late flushes")
		app128      = flag.Bool("app128", false, "OTel apps use 128-bit trace IDs under 64-bit Envoy traces")
		outDir      = flag.String("out", "", "write spans.zipkin.json, app.otlp.json and truth.jsonl here")
		zipkinURL   = flag.String("zipkin", "", "POST Envoy spans here, e.g. http://127.0.0.1:9411/api/v2/spans")
		otlpURL     = flag.String("otlp", "", "POST app spans here (OTLP/HTTP), e.g. http://127.0.0.1:4318/v1/traces")
		timeout     = flag.Duration("timeout", 2*time.Minute, "stop sending after this long")
		now         = flag.Bool("now", true, "timestamps start now (false: a fixed date, reproducible files)")
	)
	flag.Parse()

	topo, err := meshsim.LoadTopology(*topoPath)
	if err != nil {
		return err
	}
	if *propagation != "" {
		topo.SetPropagation(meshsim.Propagation(*propagation))
	}
	if *edge != "" {
		topo.SetEdge(meshsim.Edge(*edge))
	}
	if err := topo.Validate(); err != nil {
		return err
	}
	opts := def
	opts.Requests, opts.Concurrency, opts.Seed = *requests, *concurrency, *seed
	if *rate > 0 && *duration > 0 {
		opts.Rate = *rate
		opts.Requests = int(*rate * duration.Seconds())
	}
	opts.Shared, opts.DisconnectRate = *shared, *disconnects
	opts.MaxSkew, opts.RetryRate, opts.AsyncRate = *skew, *retries, *async
	opts.LateRate, opts.LateDelay, opts.App128 = *late, *lateDelay, *app128
	if *now {
		opts.Start = time.Now()
	}
	res := meshsim.Run(topo, opts)

	if *outDir != "" {
		if err := write(*outDir, res); err != nil {
			return err
		}
	}
	if *zipkinURL != "" || *otlpURL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		s := &meshsim.Sender{ZipkinURL: *zipkinURL, OTLPURL: *otlpURL}
		n, err := s.Replay(ctx, res.Spans, opts.FlushInterval)
		fmt.Fprintf(os.Stderr, "meshsim: sent %d of %d spans\n", n, len(res.Spans))
		if err != nil {
			return err
		}
	}
	r := meshsim.Evaluate(res.Spans, nil)
	fmt.Fprintf(os.Stderr, "meshsim: %d requests, %d spans, %d fragments (%d recoverable); disconnected share before %.1f%%, ideal after %.1f%%\n",
		opts.Requests, len(res.Spans), r.Fragments, r.Recoverable, 100*r.ShareBefore(), 100*r.ShareTruth())
	return nil
}

func write(dir string, res *meshsim.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	z, err := meshsim.ZipkinJSON(res.Spans)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "spans.zipkin.json"), z, 0o644); err != nil {
		return err
	}
	o, err := (&ptrace.JSONMarshaler{}).MarshalTraces(meshsim.OTLP(res.Spans))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "app.otlp.json"), o, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "truth.jsonl"))
	if err != nil {
		return err
	}
	defer f.Close()
	return meshsim.WriteTruth(f, res.Spans)
}
