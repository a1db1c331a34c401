package tracestitch

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
)

// The real captures in testdata/real (see its SOURCES.md) go through the
// processor with its default configuration, each service's spans in one
// POST, leaves first, as sidecars flush them: intact, with every app
// dropping the B3 headers but forwarding x-request-id, and with one app
// forwarding nothing. Each case runs alone and with concurrent copies of
// the traffic (shifted IDs and request IDs, overlapping times, the same
// pods).

var realCaptures = []string{
	"istio120-datadog-sleep-httpbin.json",
	"kiali-fork-helloworld-dc-error.json",
	"kiali-fork-helloworld-ok-2.json",
	"kiali-fork-helloworld-ok.json",
	"kmamiz-bookinfo-10traces.json",
	"kourier-gateway-3-single-span-traces.json",
}

// zspan is one Zipkin v2 span as JSON.
type zspan map[string]any

func (z zspan) str(k string) string { s, _ := z[k].(string); return s }

func (z zspan) tags() map[string]any {
	t, _ := z["tags"].(map[string]any)
	return t
}

func (z zspan) service() string {
	e, _ := z["localEndpoint"].(map[string]any)
	s, _ := e["serviceName"].(string)
	return s
}

// key names a span the way outSpan does (span ID and kind).
func (z zspan) key() string { return z.str("id") + "/" + z.str("kind") }

// requestIDKey returns the request-ID tag key the span carries, "" if none.
func (z zspan) requestIDTag() string {
	for _, k := range []string{"guid:x-request-id", "guid.x-request-id"} {
		if _, ok := z.tags()[k]; ok {
			return k
		}
	}
	return ""
}

func loadCapture(t *testing.T, name string) []zspan {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "real", name))
	require.NoError(t, err)
	var spans []zspan
	require.NoError(t, json.Unmarshal(b, &spans))
	require.NotEmpty(t, spans)
	return spans
}

func cloneSpans(t *testing.T, spans []zspan) []zspan {
	t.Helper()
	b, err := json.Marshal(spans)
	require.NoError(t, err)
	var out []zspan
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// xorHex XORs a hex ID with v in its low 64 bits and, for 128-bit IDs,
// with hi in its high 64 bits, keeping its width.
func xorHex(t *testing.T, id string, hi, v uint64) string {
	t.Helper()
	if id == "" {
		return ""
	}
	lo, err := strconv.ParseUint(id[len(id)-16:], 16, 64)
	require.NoError(t, err)
	out := fmt.Sprintf("%016x", lo^v)
	if len(id) > 16 {
		h, err := strconv.ParseUint(id[:len(id)-16], 16, 64)
		require.NoError(t, err)
		out = fmt.Sprintf("%0*x", len(id)-16, h^hi) + out
	}
	return out
}

// shifted is copy k of the traffic: every trace and span ID XORed with
// one value (so a root's span ID stays the low half of its trace ID),
// another request ID per request, times shifted by k×150µs.
func shifted(t *testing.T, spans []zspan, k int) []zspan {
	out := cloneSpans(t, spans)
	if k == 0 {
		return out
	}
	v := 0x9e3779b97f4a7c15 * uint64(k)
	for _, z := range out {
		z["traceId"] = xorHex(t, z.str("traceId"), v>>7, v)
		z["id"] = xorHex(t, z.str("id"), 0, v)
		if p := z.str("parentId"); p != "" {
			z["parentId"] = xorHex(t, p, 0, v)
		}
		if tag := z.requestIDTag(); tag != "" {
			rid := z.tags()[tag].(string)
			z.tags()[tag] = rid[:24] + xorHex(t, "0000"+rid[24:], 0, uint64(k))[4:]
		}
		z["timestamp"] = z["timestamp"].(float64) + float64(150*k)
	}
	return out
}

// appEgress: a sidecar CLIENT span made for a request its app was serving
// (its parent is a SERVER span): the call whose headers the app forwards.
func appEgress(byID map[string]zspan, z zspan) bool {
	p, ok := byID[z.str("parentId")]
	return ok && z.str("kind") == "CLIENT" && p.str("kind") == "SERVER"
}

// breakPropagation rewrites the app egress spans for which breaks says so
// as their sidecar reports them when the app drops the trace headers: a new
// 128-bit trace ID whose low half is the span's own ID, no parent; with
// freshRequestID, also a new x-request-id (the app forwarded nothing).
// Descendants follow, as the apps below propagate what they got. It
// returns the number of spans rewritten.
func breakPropagation(t *testing.T, spans []zspan, breaks func(zspan) bool, freshRequestID bool, seed uint64) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	byID := map[string]zspan{}
	children := map[string][]zspan{}
	for _, z := range spans {
		byID[z.str("id")] = z
	}
	for _, z := range spans {
		if p := z.str("parentId"); p != "" {
			children[p] = append(children[p], z)
		}
	}
	type context struct{ trace, rid string }
	broken := 0
	var walk func(z zspan, c context)
	walk = func(z zspan, c context) {
		if appEgress(byID, z) && breaks(z) {
			c.trace = fmt.Sprintf("%016x%s", rng.Uint64()|1, z.str("id"))
			if freshRequestID {
				c.rid = envoyRequestID(rng)
			}
			delete(z, "parentId")
			broken++
		}
		z["traceId"] = c.trace
		if tag := z.requestIDTag(); tag != "" && c.rid != "" {
			z.tags()[tag] = c.rid
		}
		for _, ch := range children[z.str("id")] {
			walk(ch, c)
		}
	}
	for _, z := range spans {
		if _, ok := byID[z.str("parentId")]; !ok {
			walk(z, context{trace: z.str("traceId")})
		}
	}
	return broken
}

// envoyRequestID is a request ID as Envoy makes it: a UUID with its trace
// reason, 9, at character 14.
func envoyRequestID(rng *rand.Rand) string {
	h := fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
	return h[0:8] + "-" + h[8:12] + "-9" + h[13:16] + "-" + h[16:20] + "-" + h[20:32]
}

// postsLeavesFirst groups spans by service, one POST each, the services
// whose spans are deepest in their trees first.
func postsLeavesFirst(spans []zspan) [][]zspan {
	byID := map[string]zspan{}
	for _, z := range spans {
		byID[z.str("id")] = z
	}
	depth := func(z zspan) int {
		d := 0
		for p, ok := byID[z.str("parentId")]; ok && d < len(spans); p, ok = byID[p.str("parentId")] {
			d++
		}
		return d
	}
	deepest := map[string]int{}
	var services []string
	for _, z := range spans {
		svc := z.service()
		if _, ok := deepest[svc]; !ok {
			services = append(services, svc)
		}
		deepest[svc] = max(deepest[svc], depth(z))
	}
	slices.SortStableFunc(services, func(a, b string) int { return deepest[b] - deepest[a] })
	var posts [][]zspan
	for _, svc := range services {
		var post []zspan
		for _, z := range spans {
			if z.service() == svc {
				post = append(post, z)
			}
		}
		posts = append(posts, post)
	}
	return posts
}

// runReal sends each copy's posts from its own goroutine, then releases
// everything; it returns what came out.
func runReal(t *testing.T, h *harness, copies [][]zspan) []outSpan {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(copies))
	for _, spans := range copies {
		h.in += len(spans)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, post := range postsLeavesFirst(spans) {
				b, err := json.Marshal(post)
				if err != nil {
					errs <- err
					return
				}
				td, err := zipkinv2.NewJSONTracesUnmarshaler(false).UnmarshalTraces(b)
				if err != nil {
					errs <- err
					return
				}
				if err := h.p.ConsumeTraces(context.Background(), td); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for range 3 {
		h.advance(2 * time.Second)
	}
	h.shutdown()
	return h.out()
}

func traceCount(spans []zspan) int {
	ids := map[string]bool{}
	for _, z := range spans {
		ids[z.str("traceId")] = true
	}
	return len(ids)
}

// padTrace is a Zipkin trace ID as pdata prints it (32 hex).
func padTrace(id string) string { return fmt.Sprintf("%032s", id) }

// byKeyOf indexes spans by key, expecting each key once.
func byKeyOf(t *testing.T, spans []zspan) map[string]zspan {
	t.Helper()
	m := map[string]zspan{}
	for _, z := range spans {
		require.NotContains(t, m, z.key(), "duplicate span in a capture")
		m[z.key()] = z
	}
	return m
}

func outKey(o outSpan) string { return o.spanID + "/" + kindName(o.kind) }

func kindName(k interface{ String() string }) string {
	switch s := k.String(); s {
	case "Server":
		return "SERVER"
	case "Client":
		return "CLIENT"
	default:
		return s
	}
}

// requireEdges checks that every span left with the trace ID and parent of
// want (by key), and that exactly want's spans came out.
func requireEdges(t *testing.T, want []zspan, out []outSpan) {
	t.Helper()
	byKey := byKeyOf(t, want)
	require.Len(t, out, len(want))
	for _, o := range out {
		z, ok := byKey[outKey(o)]
		require.True(t, ok, "unexpected span %s", outKey(o))
		assert.Equal(t, padTrace(z.str("traceId")), o.traceID, "trace of %s", outKey(o))
		parent := z.str("parentId")
		if parent == "" {
			parent = "0000000000000000"
		}
		if o.parentID == "" {
			o.parentID = "0000000000000000"
		}
		assert.Equal(t, parent, o.parentID, "parent of %s", outKey(o))
	}
}

func realCopies(t *testing.T, spans []zspan, n int) [][]zspan {
	var copies [][]zspan
	for k := range n {
		copies = append(copies, shifted(t, spans, k))
	}
	return copies
}

func concat(copies [][]zspan) []zspan {
	var all []zspan
	for _, c := range copies {
		all = append(all, c...)
	}
	return all
}

// TestRealCapturesIntact: healthy real traffic leaves exactly as it came,
// every trace connected (the Istio gateway's and a client pod's CLIENT
// roots, Kourier's and the Datadog tracer's SERVER roots are entry
// points), nothing stitched, nobody blamed.
func TestRealCapturesIntact(t *testing.T) {
	for _, name := range realCaptures {
		for _, n := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s x%d", name, n), func(t *testing.T) {
				copies := realCopies(t, loadCapture(t, name), n)
				all := concat(copies)
				h := newHarness(t, nil)
				var in []outSpan
				for _, c := range copies {
					b, err := json.Marshal(c)
					require.NoError(t, err)
					td, err := zipkinv2.NewJSONTracesUnmarshaler(false).UnmarshalTraces(b)
					require.NoError(t, err)
					in = append(in, flatten(td)...)
				}
				out := runReal(t, h, copies)
				slices.SortFunc(in, func(a, b outSpan) int { return compareOut(a, b) })
				slices.SortFunc(out, func(a, b outSpan) int { return compareOut(a, b) })
				assert.Equal(t, in, out, "output identical to input")
				assert.Equal(t, map[string]int64{"connected": int64(traceCount(all))}, h.outcomes())
				assert.Zero(t, h.counter("processor_tracestitch_stitches"))
				assert.Zero(t, h.counter("processor_tracestitch_broken_propagation"))
			})
		}
	}
}

func compareOut(a, b outSpan) int {
	if c := cmpStr(a.spanID, b.spanID); c != 0 {
		return c
	}
	return int(a.kind) - int(b.kind)
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestRealCapturesRequestIDOnly: every app forwards x-request-id but drops
// the B3 headers, so each app egress starts a new trace. Every edge comes
// back exactly as captured, each request counts once as stitched, nothing
// is disconnected and nobody is blamed.
func TestRealCapturesRequestIDOnly(t *testing.T) {
	for _, name := range realCaptures {
		for _, n := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s x%d", name, n), func(t *testing.T) {
				captured := realCopies(t, loadCapture(t, name), n)
				var sent [][]zspan
				broken, brokenTraces := 0, 0
				for k, c := range captured {
					b := cloneSpans(t, c)
					before := traceCount(b)
					broken += breakPropagation(t, b, func(zspan) bool { return true }, false, uint64(k))
					brokenTraces += traceCount(b) - before
					sent = append(sent, b)
				}
				if name == "kmamiz-bookinfo-10traces.json" {
					require.Positive(t, broken, "bookinfo's apps call each other")
				}
				h := newHarness(t, nil)
				out := runReal(t, h, sent)
				all := concat(captured)
				requireEdges(t, all, out)
				traces := int64(traceCount(all))
				stitched := int64(0)
				for _, c := range captured {
					stitched += int64(tracesWithAppEgress(c))
				}
				want := map[string]int64{}
				if stitched > 0 {
					want["stitched"] = stitched
				}
				if traces > stitched {
					want["connected"] = traces - stitched
				}
				assert.Equal(t, want, h.outcomes(), "each request once, %d fragments restored", brokenTraces)
				assert.Equal(t, int64(broken), h.counter("processor_tracestitch_stitches", attribute.String("method", "request_id")))
				assert.Zero(t, h.counter("processor_tracestitch_broken_propagation"))
			})
		}
	}
}

func tracesWithAppEgress(spans []zspan) int {
	byID := map[string]zspan{}
	for _, z := range spans {
		byID[z.str("id")] = z
	}
	traces := map[string]bool{}
	for _, z := range spans {
		if appEgress(byID, z) {
			traces[z.str("traceId")] = true
		}
	}
	return len(traces)
}

// TestRealCapturesOneAppForwardsNothing: one bookinfo app forwards neither
// trace headers nor x-request-id, so its sidecar starts each call with a
// new trace and a new request ID. Its fragments leave untouched, each
// counted disconnected and blamed on that app alone; the requests' main
// trees stay connected.
func TestRealCapturesOneAppForwardsNothing(t *testing.T) {
	for _, app := range []string{"productpage.book", "reviews.book"} {
		for _, n := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s x%d", app, n), func(t *testing.T) {
				captured := realCopies(t, loadCapture(t, "kmamiz-bookinfo-10traces.json"), n)
				var sent [][]zspan
				fragments := 0
				for k, c := range captured {
					b := cloneSpans(t, c)
					fragments += breakPropagation(t, b, func(z zspan) bool { return z.service() == app }, true, uint64(k))
					sent = append(sent, b)
				}
				require.Positive(t, fragments)
				all := concat(sent)
				h := newHarness(t, nil)
				out := runReal(t, h, sent)
				requireEdges(t, all, out)
				traces := int64(traceCount(concat(captured)))
				assert.Equal(t, map[string]int64{"connected": traces, "disconnected": int64(fragments)}, h.outcomes())
				assert.Zero(t, h.counter("processor_tracestitch_stitches"))
				assert.Equal(t, int64(fragments), h.counter("processor_tracestitch_broken_propagation", attribute.String("culprit_service", app)))
				assert.Equal(t, int64(fragments), h.counter("processor_tracestitch_broken_propagation"), "no other service blamed")
			})
		}
	}
}

// TestDatadogRequestIDKey: Envoy 1.26 with the Datadog tracer reports the
// request ID as guid.x-request-id; the default keys read it, so a fragment
// of that mesh is stitched like any other.
func TestDatadogRequestIDKey(t *testing.T) {
	h := newHarness(t, nil)
	dd := func(s ts) ts {
		s.attrs = map[string]any{"guid.x-request-id": s.rid}
		s.rid = ""
		return s
	}
	h.send(
		dd(ts{trace: traceA, id: "1111111111111111", kind: S, start: 0, end: 40, service: pp, node: pp1, rid: rid}),
		dd(ts{trace: traceB, id: "2222222222222222", kind: C, start: 3, end: 34, service: pp, node: pp1, rid: rid}),
	)
	h.advance(2 * time.Second)
	c := find(t, h.out(), "2222222222222222", C)
	assert.Equal(t, pad(traceA), c.traceID)
	assert.Equal(t, "1111111111111111", c.parentID)
	assert.Equal(t, map[string]int64{"stitched": 1}, h.outcomes())
	h.shutdown()
}
