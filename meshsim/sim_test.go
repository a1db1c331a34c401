package meshsim

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func run(t *testing.T, mutate func(*Options, *Topology)) *Result {
	t.Helper()
	topo, err := LoadTopology("")
	require.NoError(t, err)
	opts := DefaultOptions()
	if mutate != nil {
		mutate(&opts, topo)
	}
	return Run(topo, opts)
}

func TestGroundTruthIsConsistent(t *testing.T) {
	res := run(t, func(o *Options, _ *Topology) { o.Shared = true; o.App128 = true; o.RetryRate = 0.2 })
	byKey := map[string]*Span{}
	for _, s := range res.Spans {
		require.NotContains(t, byKey, s.Key, "span keys are unique")
		byKey[s.Key] = s
	}
	var fragments, recoverable, roots int
	for i, s := range res.Spans {
		if i > 0 {
			assert.False(t, s.Arrival.Before(res.Spans[i-1].Arrival), "spans are in arrival order")
		}
		assert.False(t, s.End.Before(s.Start), s.Key)
		if s.TrueParent == "" {
			roots++
			assert.Equal(t, "CLIENT", s.Kind, "the gateway's span is the root")
			assert.Equal(t, "istio-ingressgateway.istio-system", s.Service)
			assert.Equal(t, s.TraceIDHex(), s.IDHex(), "a 64-bit root's span ID is its trace ID")
			continue
		}
		p := byKey[s.TrueParent]
		require.NotNil(t, p, "true parent of %s exists", s.Key)
		if s.Fragment {
			fragments++
			assert.NotEqual(t, p.TraceID, s.TraceID, "a fragment starts a new trace ID")
			if s.Recoverable {
				recoverable++
			}
			continue
		}
		assert.Equal(t, p.TraceID, s.TraceID, "%s stays in its parent's trace", s.Key)
		shared := s.Shared && s.ID == p.ID
		assert.True(t, shared || s.ParentID == p.ID, "%s carries its parent's span ID", s.Key)
	}
	assert.Equal(t, 100, roots, "one root per request")
	assert.Positive(t, fragments)
	assert.Positive(t, recoverable)
	assert.Less(t, recoverable, fragments, "the default mesh has unrecoverable breaks (propagation none, fan-out)")

	// The input evaluated as output: nothing changed, nothing wrong, only
	// the parent-ID fragments (64/128-bit) are joined already... not even
	// those, since their trace IDs differ.
	in := make([]OutSpan, 0, len(res.Spans))
	for _, s := range res.Spans {
		in = append(in, s.Out())
	}
	r := Evaluate(res.Spans, in)
	assert.Zero(t, r.WrongEdges)
	assert.Zero(t, r.Lost)
	assert.Zero(t, r.Restored)
	assert.Equal(t, r.TracesBefore, r.TracesAfter)
	assert.Greater(t, r.ShareBefore(), r.ShareTruth(), "stitching can repair something")
}

func TestDeterministicPerSeed(t *testing.T) {
	a := run(t, nil)
	b := run(t, nil)
	ja, _ := ZipkinJSON(a.Spans)
	jb, _ := ZipkinJSON(b.Spans)
	assert.Equal(t, ja, jb)
	c := run(t, func(o *Options, _ *Topology) { o.Seed = 2 })
	jc, _ := ZipkinJSON(c.Spans)
	assert.NotEqual(t, ja, jc)
}

func TestEncodings(t *testing.T) {
	res := run(t, nil)
	b, err := ZipkinJSON(res.Spans)
	require.NoError(t, err)
	var zs []map[string]any
	require.NoError(t, json.Unmarshal(b, &zs))
	require.NotEmpty(t, zs)
	tags := zs[0]["tags"].(map[string]any)
	for _, k := range []string{"guid:x-request-id", "node_id", "upstream_cluster", "http.url", "http.method", "http.status_code", "component", "response_flags"} {
		assert.Contains(t, tags, k)
	}
	td, err := Traces(res.Spans)
	require.NoError(t, err)
	assert.Equal(t, len(res.Spans), td.SpanCount(), "every span converts")
	var buf bytes.Buffer
	require.NoError(t, WriteTruth(&buf, res.Spans))
	assert.Equal(t, len(res.Spans), bytes.Count(buf.Bytes(), []byte("\n")))
}

func TestTopologyErrors(t *testing.T) {
	_, err := ParseTopology([]byte("entry: a\nservices: [{name: a, calls: [{service: b}]}]"))
	assert.ErrorContains(t, err, `calls undefined service "b"`)
	_, err = ParseTopology([]byte("entry: a\nservices: [{name: a, calls: [{service: a}]}]"))
	assert.ErrorContains(t, err, "call cycle")
	_, err = ParseTopology([]byte("entry: a\nservices: [{name: a, propagation: some}]"))
	assert.ErrorContains(t, err, "unknown propagation")
}

func TestRateSpacesRequests(t *testing.T) {
	res := run(t, func(o *Options, _ *Topology) { o.Rate = 10; o.Requests = 5 })
	var starts []int64
	for _, s := range res.Spans {
		if s.TrueParent == "" {
			starts = append(starts, s.Start.UnixMilli())
		}
	}
	require.Len(t, starts, 5)
	// 5 requests at 10/s span 400ms (all enter through one gateway pod, so
	// one clock; sub-millisecond jitter)
	assert.InDelta(t, 400, slices.Max(starts)-slices.Min(starts), 2)
}

// TestDisconnectLetsServerOutliveClient: on a downstream disconnect both
// spans of the hop say so, and the SERVER span ends after its CLIENT.
func TestDisconnectLetsServerOutliveClient(t *testing.T) {
	res := run(t, func(o *Options, _ *Topology) { o.DisconnectRate = 1; o.Requests = 5 })
	byKey := map[string]*Span{}
	for _, s := range res.Spans {
		byKey[s.Key] = s
	}
	pairs := 0
	for _, s := range res.Spans {
		p := byKey[s.TrueParent]
		if s.Kind != "SERVER" || p == nil || p.Kind != "CLIENT" || p.Tags["response_flags"] != "DC" {
			continue
		}
		pairs++
		assert.True(t, s.End.After(p.End), "%s outlives its client", s.Key)
		for _, sp := range []*Span{s, p} {
			assert.Equal(t, "0", sp.Tags["http.status_code"])
			assert.Equal(t, "0", sp.Tags["response_size"])
			assert.Equal(t, "true", sp.Tags["error"])
		}
	}
	assert.Positive(t, pairs)
}

// TestReportOrderIsNotCausal: reporters flush on their own schedule, so
// children often reach the collector before their parents.
func TestReportOrderIsNotCausal(t *testing.T) {
	res := run(t, nil)
	pos := map[string]int{}
	for i, s := range res.Spans {
		pos[s.Key] = i
	}
	before := 0
	for _, s := range res.Spans {
		if p, ok := pos[s.TrueParent]; ok && pos[s.Key] < p {
			before++
		}
	}
	assert.Greater(t, before, len(res.Spans)/4, "children arriving before their parents")
}
