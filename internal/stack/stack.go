// Package stack starts the Jaeger backend and the ocb-built collector on
// free loopback ports, for the end-to-end test and the `make run` demo, and
// stops them by PID.
package stack

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	JaegerUI   string // Jaeger UI and query API base URL
	ZipkinURL  string // collector's Zipkin endpoint (…/api/v2/spans)
	OTLPURL    string // collector's OTLP/HTTP traces endpoint
	MetricsURL string // collector's Prometheus endpoint
	procs      []*exec.Cmd
	logs       []*os.File
}

// Start launches Jaeger, then the collector, and waits until both answer.
// On error everything started is stopped.
func Start(ctx context.Context, o Options) (*Stack, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	env := map[string]int{
		"JAEGER_QUERY_PORT": ports[0], "JAEGER_QUERY_GRPC_PORT": ports[1], "JAEGER_ZIPKIN_PORT": ports[2],
		"COLLECTOR_ZIPKIN_PORT": ports[3], "COLLECTOR_OTLP_HTTP_PORT": ports[4], "COLLECTOR_METRICS_PORT": ports[5],
	}
	s := &Stack{
		JaegerUI:   fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		ZipkinURL:  fmt.Sprintf("http://127.0.0.1:%d/api/v2/spans", ports[3]),
		OTLPURL:    fmt.Sprintf("http://127.0.0.1:%d/v1/traces", ports[4]),
		MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[5]),
	}
	if err := s.start(o.JaegerBin, o.JaegerConfig, filepath.Join(o.LogDir, "jaeger.log"), env); err != nil {
		s.Stop()
		return nil, err
	}
	if err := waitHTTP(ctx, s.JaegerUI+"/api/services", 60*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("jaeger did not start (see %s): %w", filepath.Join(o.LogDir, "jaeger.log"), err)
	}
	if err := s.start(o.CollectorBin, o.CollectorConfig, filepath.Join(o.LogDir, "collector.log"), env); err != nil {
		s.Stop()
		return nil, err
	}
	if err := waitHTTP(ctx, s.MetricsURL, 60*time.Second); err != nil {
		s.Stop()
		return nil, fmt.Errorf("collector did not start (see %s): %w", filepath.Join(o.LogDir, "collector.log"), err)
	}
	return s, nil
}

func (s *Stack) start(bin, config, logPath string, env map[string]int) error {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+strconv.Itoa(v))
	}
	// own process group, so that stopping by PID reaches children too
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.procs = append(s.procs, cmd)
	s.logs = append(s.logs, log)
	return nil
}

// Stop ends every process (SIGTERM, SIGKILL after 10s), newest first.
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		cmd := s.procs[i]
		pgid := -cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			<-done
		}
	}
	for _, l := range s.logs {
		l.Close()
	}
	s.procs, s.logs = nil, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
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

// Metrics scrapes the collector's Prometheus endpoint: series → value.
func (s *Stack) Metrics(ctx context.Context) (map[string]float64, error) {
	body, err := get(ctx, s.MetricsURL)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
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

// Trace fetches one trace from Jaeger's query API as flat spans.
func (s *Stack) Trace(ctx context.Context, traceID string) ([]meshsim.OutSpan, error) {
	body, err := get(ctx, s.JaegerUI+"/api/traces/"+traceID)
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
