// Package stack starts the Jaeger backend and the ocb-built collector on
// free loopback ports, for the end-to-end test and the `make run` demo, and
// stops them by PID.
package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tracestitch/tracestitch/meshsim"
)

// Options say where the binaries and configs are.
type Options struct {
	CollectorBin, CollectorConfig string
	JaegerBin, JaegerConfig       string
	// LogDir receives collector.log and jaeger.log.
	LogDir string
}

// Stack is a running backend + collector.
type Stack struct {
	Jaeger
	ZipkinURL  string // collector's Zipkin endpoint (…/api/v2/spans)
	OTLPURL    string // collector's OTLP/HTTP traces endpoint
	MetricsURL string // collector's Prometheus endpoint
	procs      []*Proc
}

// Start launches Jaeger, then the collector, and waits until both answer.
// On error everything started is stopped.
func Start(ctx context.Context, o Options) (*Stack, error) {
	ports, err := FreePorts(6)
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"JAEGER_QUERY_PORT": ports[0], "JAEGER_QUERY_GRPC_PORT": ports[1], "JAEGER_ZIPKIN_PORT": ports[2],
		"COLLECTOR_ZIPKIN_PORT": ports[3], "COLLECTOR_OTLP_HTTP_PORT": ports[4], "COLLECTOR_METRICS_PORT": ports[5],
	}
	s := &Stack{
		Jaeger:     Jaeger{URL: "http://127.0.0.1:" + ports[0]},
		ZipkinURL:  "http://127.0.0.1:" + ports[3] + "/api/v2/spans",
		OTLPURL:    "http://127.0.0.1:" + ports[4] + "/v1/traces",
		MetricsURL: "http://127.0.0.1:" + ports[5] + "/metrics",
	}
	steps := []struct{ name, bin, config, ready string }{
		{"jaeger", o.JaegerBin, o.JaegerConfig, s.Jaeger.URL + "/api/services"},
		{"collector", o.CollectorBin, o.CollectorConfig, s.MetricsURL},
	}
	for _, st := range steps {
		p, err := Launch(st.name, st.bin, st.config, filepath.Join(o.LogDir, st.name+".log"), env)
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.procs = append(s.procs, p)
		if err := WaitHTTP(ctx, st.ready, 60*time.Second); err != nil {
			s.Stop()
			return nil, fmt.Errorf("%s did not start (see %s): %w", st.name, p.LogPath, err)
		}
	}
	return s, nil
}

// Stop ends every process (SIGTERM, SIGKILL after 10s), newest first.
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].Terminate(10 * time.Second)
	}
	s.procs = nil
}

// Metrics scrapes the collector's Prometheus endpoint.
func (s *Stack) Metrics(ctx context.Context) (Metrics, error) { return Scrape(ctx, s.MetricsURL) }

// FreePorts are n distinct free loopback TCP ports, as strings.
func FreePorts(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}

// WaitHTTP polls url until it answers 200 OK or timeout passes.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// ErrTraceNotFound is returned by Trace for an unknown trace ID.
var ErrTraceNotFound = errors.New("trace not found")

type jaegerResponse struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			TraceID    string `json:"traceID"`
			SpanID     string `json:"spanID"`
			References []struct {
				RefType string `json:"refType"`
				TraceID string `json:"traceID"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			ProcessID string     `json:"processID"`
			StartTime int64      `json:"startTime"` // µs
			Duration  int64      `json:"duration"`  // µs
			Tags      []jaegerKV `json:"tags"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string     `json:"serviceName"`
			Tags        []jaegerKV `json:"tags"`
		} `json:"processes"`
	} `json:"data"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// instanceOf reads a span's instance as the processor's default
// instance_identity does: each key on the span, then on its process.
func instanceOf(span, process []jaegerKV, service string) string {
	for _, k := range []string{"node_id", "k8s.pod.name", "service.instance.id", "host.name"} {
		for _, tags := range [][]jaegerKV{span, process} {
			for _, kv := range tags {
				if v, ok := kv.Value.(string); ok && kv.Key == k && v != "" {
					return v
				}
			}
		}
	}
	return service
}

// Jaeger is a Jaeger query API.
type Jaeger struct {
	URL string // base URL of the query API and UI
}

// Trace fetches one trace from Jaeger's query API as flat spans.
func (j Jaeger) Trace(ctx context.Context, traceID string) ([]meshsim.OutSpan, error) {
	body, err := get(ctx, j.URL+"/api/traces/"+traceID)
	if err != nil {
		if strings.Contains(err.Error(), "404") {
			return nil, ErrTraceNotFound
		}
		return nil, err
	}
	var r jaegerResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	var out []meshsim.OutSpan
	for _, t := range r.Data {
		for _, sp := range t.Spans {
			proc := t.Processes[sp.ProcessID]
			o := meshsim.OutSpan{
				TraceID: pad32(sp.TraceID), SpanID: sp.SpanID, Service: proc.ServiceName,
				Instance: instanceOf(sp.Tags, proc.Tags, proc.ServiceName),
				Start:    sp.StartTime * 1000, End: (sp.StartTime + sp.Duration) * 1000,
			}
			for _, ref := range sp.References {
				if ref.RefType == "CHILD_OF" {
					o.ParentID = ref.SpanID
					break
				}
			}
			for _, tag := range sp.Tags {
				switch tag.Key {
				case "span.kind":
					o.Kind = strings.ToUpper(fmt.Sprint(tag.Value))
				case "tracestitch.stitched_by":
					o.StitchedBy = fmt.Sprint(tag.Value)
				}
			}
			out = append(out, o)
		}
	}
	return out, nil
}

func pad32(id string) string {
	if len(id) < 32 {
		return strings.Repeat("0", 32-len(id)) + id
	}
	return id
}

// Tree renders one trace as an indented tree, children in span order.
func Tree(spans []meshsim.OutSpan) string {
	children := map[string][]meshsim.OutSpan{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	var roots []meshsim.OutSpan
	for _, s := range spans {
		if s.ParentID == "" || !ids[s.ParentID] {
			roots = append(roots, s)
			continue
		}
		children[s.ParentID] = append(children[s.ParentID], s)
	}
	var b strings.Builder
	var walk func(s meshsim.OutSpan, depth int)
	walk = func(s meshsim.OutSpan, depth int) {
		mark := ""
		if s.StitchedBy != "" {
			mark = "   <- stitched by " + s.StitchedBy
		}
		fmt.Fprintf(&b, "%s%-6s %s %s%s\n", strings.Repeat("  ", depth), s.Kind, s.Service, s.SpanID, mark)
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}
