package meshsim

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realDir holds the real Envoy/Istio captures (see its SOURCES.md).
var realDir = filepath.Join("..", "processor", "tracestitch", "testdata", "real")

type zjson map[string]any

func (z zjson) str(k string) string { s, _ := z[k].(string); return s }

func (z zjson) num(k string) int64 { f, _ := z[k].(float64); return int64(f) }

func (z zjson) tag(k string) (string, bool) {
	t, _ := z["tags"].(map[string]any)
	v, ok := t[k].(string)
	return v, ok
}

func loadReal(t *testing.T, names ...string) []zjson {
	t.Helper()
	var all []zjson
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(realDir, n))
		require.NoError(t, err)
		var spans []zjson
		require.NoError(t, json.Unmarshal(b, &spans))
		all = append(all, spans...)
	}
	return all
}

func simZipkin(t *testing.T, edge Edge) []zjson {
	t.Helper()
	topo, err := LoadTopology("")
	require.NoError(t, err)
	topo.SetPropagation(PropagationFull)
	topo.SetEdge(edge)
	for _, svc := range topo.Services {
		svc.OTelApp = false // the captures hold Envoy's spans only
	}
	opts := DefaultOptions()
	opts.RetryRate, opts.DisconnectRate = 0, 0
	b, err := ZipkinJSON(Run(topo, opts).Spans)
	require.NoError(t, err)
	var spans []zjson
	require.NoError(t, json.Unmarshal(b, &spans))
	return spans
}

// shapes of tag values and names: each value is described by the first
// pattern it matches.
var shapes = []struct {
	name string
	re   *regexp.Regexp
}{
	{"node-sidecar", regexp.MustCompile(`^sidecar~\d+\.\d+\.\d+\.\d+~[a-z0-9-]+\.[a-z0-9-]+~[a-z0-9-]+\.svc\.cluster\.local$`)},
	{"node-router", regexp.MustCompile(`^router~\d+\.\d+\.\d+\.\d+~[a-z0-9-]+\.[a-z0-9-]+~[a-z0-9-]+\.svc\.cluster\.local$`)},
	{"request-id-9", regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-9[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$`)},
	{"outbound-cluster", regexp.MustCompile(`^outbound\|\d+\|[a-z0-9-]*\|[a-z0-9.-]+$`)},
	{"inbound-cluster", regexp.MustCompile(`^inbound\|\d+\|\|$`)},
	{"route-fqdn", regexp.MustCompile(`^[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local:\d+/\S*$`)},
	{"route-short", regexp.MustCompile(`^[a-z0-9-]+:\d+/\S*$`)},
	{"url", regexp.MustCompile(`^http://[a-z0-9.-]+(:\d+)?/\S*$`)},
	{"ipv4", regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)},
	{"count", regexp.MustCompile(`^\d+$`)},
	{"dash", regexp.MustCompile(`^-$`)},
	{"word", regexp.MustCompile(`^[A-Za-z][A-Za-z0-9./_-]*$`)},
	{"text", regexp.MustCompile(`.`)},
}

func shapeOf(v string) string {
	for _, s := range shapes {
		if s.re.MatchString(v) {
			return s.name
		}
	}
	return "empty"
}

// role is what emitted a span: the gateway, a sidecar's CLIENT or SERVER
// side.
func role(z zjson) string {
	node, _ := z.tag("node_id")
	switch {
	case strings.HasPrefix(node, "router~"):
		return "gateway " + z.str("kind")
	case strings.HasPrefix(node, "sidecar~"):
		return "sidecar " + z.str("kind")
	}
	return "other " + z.str("kind")
}

// structure lists the facts about spans that bear on stitching and
// counting, per role: kind and parent pattern, tag keys, value shapes, IDs
// and timing. Two sets of spans with the same structure differ only in
// values.
func structure(spans []zjson) []string {
	facts := map[string]bool{}
	add := func(f string, args ...any) { facts[fmt.Sprintf(f, args...)] = true }
	byID := map[string]zjson{}
	children := map[string][]zjson{}
	ridOfTrace := map[string]map[string]bool{}
	for _, z := range spans {
		byID[z.str("id")] = z
	}
	for _, z := range spans {
		r := role(z)
		p, hasParent := byID[z.str("parentId")]
		switch {
		case z.str("parentId") == "":
			add("%s: root", r)
			if tid := z.str("traceId"); strings.HasSuffix(tid, z.str("id")) {
				add("%s: root span ID is the trace ID's low 64 bits", r)
			} else {
				add("%s: root span ID unrelated to the trace ID", r)
			}
		case hasParent:
			add("%s: child of %s", r, role(p))
			children[p.str("id")] = append(children[p.str("id")], z)
			if z.str("name") == p.str("name") {
				add("%s: same name as its %s parent", r, role(p))
			}
		default:
			add("%s: parent missing", r)
		}
		if z.str("id") == z.str("parentId") || (hasParent && p.str("id") == z.str("id")) {
			add("shared span IDs")
		}
		tags, _ := z["tags"].(map[string]any)
		var keys []string
		for k, v := range tags {
			if k == "error" || k == "net.host.ip" {
				continue // only on failures; added by Tempo
			}
			keys = append(keys, k)
			s, _ := v.(string)
			add("%s: %s is %s", r, k, shapeOf(s))
		}
		sort.Strings(keys)
		add("%s: tags %s", r, strings.Join(keys, ","))
		add("%s: name is %s", r, shapeOf(z.str("name")))
		add("%s: trace ID of %d hex", r, len(z.str("traceId")))
		if rid, ok := z.tag("guid:x-request-id"); ok {
			if ridOfTrace[z.str("traceId")] == nil {
				ridOfTrace[z.str("traceId")] = map[string]bool{}
			}
			ridOfTrace[z.str("traceId")][rid] = true
		}
		anns, _ := z["annotations"].([]any)
		add("%s: %d annotation(s)", r, len(anns))
		for _, a := range anns {
			a := zjson(a.(map[string]any))
			lag := a.num("timestamp") - z.num("timestamp") - z.num("duration")
			add("%s: annotation %s, %v after the end", r, a.str("value"), lag >= 25 && lag <= 178)
		}
		if hasParent && p.str("kind") == "CLIENT" && z.str("kind") == "SERVER" {
			hop := z.num("timestamp") - p.num("timestamp")
			tail := p.num("timestamp") + p.num("duration") - z.num("timestamp") - z.num("duration")
			add("%s after %s: starts 129-2890µs later: %v", r, role(p), hop >= 129 && hop <= 2890)
			add("%s after %s: ends 194-13393µs before: %v", r, role(p), tail >= 194 && tail <= 13393)
		}
	}
	for _, rids := range ridOfTrace {
		add("request IDs per trace: %d", len(rids))
	}
	for _, kids := range children {
		sort.Slice(kids, func(a, b int) bool { return kids[a].num("timestamp") < kids[b].num("timestamp") })
		for i := 1; i < len(kids); i++ {
			prev := kids[i-1]
			add("fan-out sequential: %v", kids[i].num("timestamp") >= prev.num("timestamp")+prev.num("duration"))
		}
	}
	out := make([]string, 0, len(facts))
	for f := range facts {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// TestSimulatorMatchesRealCaptures: intact simulated traffic has the same
// per-role structure as the real Istio captures: through the ingress
// gateway (bookinfo) and from a client pod (sleep → helloworld).
func TestSimulatorMatchesRealCaptures(t *testing.T) {
	t.Run("istio gateway", func(t *testing.T) {
		assert.Equal(t, structure(loadReal(t, "kmamiz-bookinfo-10traces.json")), structure(simZipkin(t, EdgeIstioGateway)))
	})
	t.Run("client pod", func(t *testing.T) {
		// These captures hold one hop (the simulator's requests go deeper)
		// and came through Jaeger's API, which kept no annotations.
		withoutAnnotations := func(facts []string) []string {
			return slices.DeleteFunc(facts, func(f string) bool { return strings.Contains(f, "annotation") })
		}
		real := withoutAnnotations(structure(loadReal(t, "kiali-fork-helloworld-ok.json", "kiali-fork-helloworld-ok-2.json")))
		sim := withoutAnnotations(structure(simZipkin(t, EdgeClientPod)))
		assert.Subset(t, sim, real)
	})
}

// TestAppSpansHangUnderTheirSidecar: the captures hold no app spans, so the
// simulator's OTel SDK spans are checked against how an instrumented app
// behind a sidecar reports: its SERVER span is the child of its sidecar's
// SERVER span, its CLIENT spans children of that, and its sidecar's CLIENT
// span the child of the app's CLIENT span; all on the same pod.
func TestAppSpansHangUnderTheirSidecar(t *testing.T) {
	res := run(t, func(o *Options, topo *Topology) { topo.SetPropagation(PropagationFull) })
	byKey := map[string]*Span{}
	for _, s := range res.Spans {
		byKey[s.Key] = s
	}
	patterns := map[string]int{}
	for _, s := range res.Spans {
		p := byKey[s.TrueParent]
		if p == nil || (s.Source != SourceOTel && p.Source != SourceOTel) {
			continue
		}
		patterns[fmt.Sprintf("%s %s under %s %s", s.Source, s.Kind, p.Source, p.Kind)]++
		assert.Equal(t, p.Pod, s.Pod, "%s is reported from its parent's pod", s.Key)
		assert.Equal(t, p.ID, s.ParentID, "%s carries its parent's span ID", s.Key)
	}
	assert.Equal(t, []string{"envoy CLIENT under otel CLIENT", "otel CLIENT under otel SERVER", "otel SERVER under envoy SERVER"},
		slices.Sorted(maps.Keys(patterns)))
}
