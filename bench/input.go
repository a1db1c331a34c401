// Package bench measures tracestitch side by side with contrib's
// groupbytraceprocessor and a regroup-only floor on the same simulator
// traffic. `make bench` prints the table (bench/cmd/benchtable);
// `go test -bench . ./bench` runs the same code as Go benchmarks.
package bench

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
	"github.com/tracestitch/tracestitch/meshsim"
)

// Shape is the kind of traffic a round is fed.
type Shape string

const (
	// Spans10, Spans100, Spans1000: requests of about that many spans, 30%
	// of them broken by a service that forwards only x-request-id.
	Spans10   Shape = "10-span traces"
	Spans100  Shape = "100-span traces"
	Spans1000 Shape = "1000-span traces"
	// SingleSpan: probes, each a lone SERVER span with a request ID of its
	// own (the SERVER spans of Spans10, each in a trace of its own).
	SingleSpan Shape = "single-span traces"
	// SpanPerResource: Spans10 with every span in a ResourceSpans and a
	// ScopeSpans of its own, as a batch processor in front leaves many small
	// payloads concatenated.
	SpanPerResource Shape = "one span per ResourceSpans"
	// Mix: the calibrated simulator's default mesh (an Istio gateway; one
	// service forwards only x-request-id, one nothing).
	Mix Shape = "calibrated mix"
)

// Shapes are every shape, in table order.
var Shapes = []Shape{Spans10, Spans100, Spans1000, SingleSpan, SpanPerResource, Mix}

// ParseShape accepts a shape's name or its span count (10, 100, 1000).
func ParseShape(name string) (Shape, error) {
	for _, s := range Shapes {
		if name == string(s) || name+"-span traces" == string(s) {
			return s, nil
		}
	}
	return "", fmt.Errorf("unknown shape %q", name)
}

// topology builds a mesh whose requests have about `size` spans; broken
// makes one mid-level service forward only x-request-id.
func topology(size int, broken bool) *meshsim.Topology {
	var b strings.Builder
	b.WriteString("entry: gateway\nservices:\n")
	svc := func(name string, prop meshsim.Propagation, calls ...string) {
		fmt.Fprintf(&b, "  - {name: %s, propagation: %s, replicas: 2, work_ms: 1, calls: [", name, prop)
		for i, c := range calls {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "{service: %s, parallel: true}", c)
		}
		b.WriteString("]}\n")
	}
	mid := meshsim.PropagationFull
	if broken {
		mid = meshsim.PropagationRequestIDOnly
	}
	if size == 10 { // 1 + 2×4 calls = 9 spans, 10 with a retry now and then
		svc("gateway", meshsim.PropagationFull, "a")
		svc("a", mid, "b", "c")
		svc("b", meshsim.PropagationFull, "d")
		svc("c", meshsim.PropagationFull)
		svc("d", meshsim.PropagationFull)
	} else {
		// a gateway, a hub, `leaves` services under the hub, each calling
		// the same `subs` services: 1 + 2×(1 + leaves + leaves×subs) spans
		leaves, subs := 7, 6 // 1 + 2×(1+7+42) = 101
		if size == 1000 {
			leaves, subs = 10, 49 // 1 + 2×(1+10+490) = 1003
		}
		names := func(prefix string, n int) []string {
			out := make([]string, n)
			for i := range out {
				out[i] = fmt.Sprintf("%s%d", prefix, i)
			}
			return out
		}
		svc("gateway", meshsim.PropagationFull, "hub")
		svc("hub", mid, names("l", leaves)...)
		for _, l := range names("l", leaves) {
			svc(l, meshsim.PropagationFull, names("s", subs)...)
		}
		for _, s := range names("s", subs) {
			svc(s, meshsim.PropagationFull)
		}
	}
	t, err := meshsim.ParseTopology([]byte(b.String()))
	if err != nil {
		panic(err)
	}
	return t
}

// Input is pre-generated traffic: batches as a receiver would hand them on.
type Input struct {
	Batches []ptrace.Traces
	Spans   int
	// moves: the stitch decisions of the ground truth, before replication
	// (see stitchDecisions); reps: the number of replicas
	moves map[pcommon.TraceID]pcommon.TraceID
	reps  int
	// attrCaps: the capacity of each span's attribute array as the
	// receiver left it, per simulated batch (Batches repeats them)
	attrCaps [][]int
}

// Generate makes about `spans` spans of the given shape in batches of the
// spans that arrived within 50ms. Requests are simulated once and
// replicated with fresh IDs, which keeps generation cheap for a million
// spans.
func Generate(shape Shape, spans int) Input {
	all := simulate(shape)
	var base []ptrace.Traces
	var caps [][]int
	for _, b := range meshsim.Batches(all, 50e6) {
		td, err := meshsim.Traces(b)
		if err != nil {
			panic(err)
		}
		switch shape {
		case SingleSpan:
			td = probes(td)
		case SpanPerResource:
			td = spanPerResource(td)
		}
		if td.SpanCount() == 0 {
			continue
		}
		base = append(base, td)
		caps = append(caps, attrCapacities(td))
	}
	in := Input{attrCaps: caps}
	if shape != SingleSpan {
		in.moves = stitchDecisions(all)
	}
	for rep := 0; in.Spans < spans; rep++ {
		in.reps++
		for _, td := range base {
			c := ptrace.NewTraces()
			td.CopyTo(c)
			if rep > 0 {
				reID(c, uint64(rep))
			}
			in.Batches = append(in.Batches, c)
			in.Spans += c.SpanCount()
		}
	}
	return in
}

// simulate runs the simulator for one replica of a shape's traffic.
func simulate(shape Shape) []*meshsim.Span {
	if shape == Mix {
		topo, err := meshsim.LoadTopology("")
		if err != nil {
			panic(err)
		}
		opts := meshsim.DefaultOptions()
		opts.Requests = 200
		return meshsim.Run(topo, opts).Spans
	}
	size := 10
	switch shape {
	case Spans100:
		size = 100
	case Spans1000:
		size = 1000
	}
	requests := 200
	if size == 1000 {
		requests = 20
	}
	opts := meshsim.DefaultOptions()
	opts.Requests = requests * 7 / 10
	opts.RetryRate = 0
	whole := meshsim.Run(topology(size, false), opts).Spans
	opts.Requests = requests * 3 / 10
	opts.Seed = 2
	broken := meshsim.Run(topology(size, true), opts).Spans
	for _, s := range broken {
		s.Request += requests // keep request numbers apart
	}
	all := append(whole, broken...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Arrival.Before(all[j].Arrival) })
	return all
}

// probes keeps td's SERVER spans, each alone in a trace whose ID is its
// span ID twice, without parent, with a request ID of its own.
func probes(td ptrace.Traces) ptrace.Traces {
	td.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
		rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
			ss.Spans().RemoveIf(func(s ptrace.Span) bool { return s.Kind() != ptrace.SpanKindServer })
			return ss.Spans().Len() == 0
		})
		return rs.ScopeSpans().Len() == 0
	})
	pdatautil.EachSpan(td, func(s ptrace.Span) {
		id := s.SpanID()
		var t pcommon.TraceID
		copy(t[:8], id[:])
		copy(t[8:], id[:])
		s.SetTraceID(t)
		s.SetParentSpanID(pcommon.SpanID{})
		for _, key := range []string{"guid:x-request-id", "http.request.header.x-request-id"} {
			if v, ok := s.Attributes().Get(key); ok && v.Type() == pcommon.ValueTypeStr && len(v.Str()) == 36 {
				// unique in the groups that replicas keep (see reID)
				v.SetStr(hex.EncodeToString(id[:4]) + v.Str()[8:24] + hex.EncodeToString(id[4:6]) + v.Str()[28:])
			}
		}
	})
	return td
}

// spanPerResource moves every span of td into a ResourceSpans and a
// ScopeSpans of its own, copies of those it was under.
func spanPerResource(td ptrace.Traces) ptrace.Traces {
	out := ptrace.NewTraces()
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, s := range ss.Spans().All() {
				ors := out.ResourceSpans().AppendEmpty()
				rs.Resource().CopyTo(ors.Resource())
				ors.SetSchemaUrl(rs.SchemaUrl())
				oss := ors.ScopeSpans().AppendEmpty()
				ss.Scope().CopyTo(oss.Scope())
				oss.SetSchemaUrl(ss.SchemaUrl())
				s.CopyTo(oss.Spans().AppendEmpty())
			}
		}
	}
	return out
}

// stitchDecisions maps the trace ID of every fragment a correct stitcher
// reattaches (its root is recoverable) to the trace ID it joins.
func stitchDecisions(spans []*meshsim.Span) map[pcommon.TraceID]pcommon.TraceID {
	byKey := make(map[string]*meshsim.Span, len(spans))
	for _, s := range spans {
		byKey[s.Key] = s
	}
	joins := map[pcommon.TraceID]pcommon.TraceID{}
	for _, s := range spans {
		if p := byKey[s.TrueParent]; s.Fragment && s.Recoverable && p != nil && p.TraceID != s.TraceID {
			joins[s.TraceID] = p.TraceID
		}
	}
	moves := make(map[pcommon.TraceID]pcommon.TraceID, len(joins))
	for from, to := range joins {
		// a fragment of a fragment ends where its parent fragment does
		for seen := 0; seen < len(joins); seen++ {
			next, ok := joins[to]
			if !ok {
				break
			}
			to = next
		}
		moves[from] = to
	}
	return moves
}

// decisions are the stitch decisions for the spans of CloneAs(space) for
// each of the spaces.
func (in Input) decisions(spaces ...uint64) map[pcommon.TraceID]pcommon.TraceID {
	out := make(map[pcommon.TraceID]pcommon.TraceID, len(in.moves)*in.reps*len(spaces))
	for _, space := range spaces {
		for rep := 0; rep < in.reps; rep++ {
			x := uint64(rep) ^ space<<20 // as reID does, per replica and per clone
			for from, to := range in.moves {
				out[xorTrace(from, x)] = xorTrace(to, x)
			}
		}
	}
	return out
}

func xorTrace(t pcommon.TraceID, x uint64) pcommon.TraceID {
	binary.BigEndian.PutUint64(t[8:], binary.BigEndian.Uint64(t[8:])^x)
	return t
}

// reID makes a replica distinct: trace, span and parent IDs and request IDs
// are XORed with the replica number, so structure and links are kept.
func reID(td ptrace.Traces, rep uint64) {
	pdatautil.EachSpan(td, func(s ptrace.Span) {
		s.SetTraceID(xorTrace(s.TraceID(), rep))
		s.SetSpanID(xorSpan(s.SpanID(), rep))
		if p := s.ParentSpanID(); !p.IsEmpty() {
			s.SetParentSpanID(xorSpan(p, rep))
		}
		suffix := fmt.Sprintf("%08x", rep)
		for _, key := range []string{"guid:x-request-id", "http.request.header.x-request-id"} {
			v, ok := s.Attributes().Get(key)
			if !ok {
				continue
			}
			if v.Type() == pcommon.ValueTypeStr && len(v.Str()) == 36 {
				v.SetStr(v.Str()[:28] + suffix)
			} else if v.Type() == pcommon.ValueTypeSlice && v.Slice().Len() > 0 {
				if e := v.Slice().At(0); len(e.Str()) == 36 {
					e.SetStr(e.Str()[:28] + suffix)
				}
			}
		}
	})
}

func xorSpan(id pcommon.SpanID, rep uint64) pcommon.SpanID {
	binary.BigEndian.PutUint64(id[:], binary.BigEndian.Uint64(id[:])^(rep<<32))
	return id
}

// Clone deep-copies the batches (processors take ownership of their input).
func (in Input) Clone() []ptrace.Traces { return in.CloneAs(0) }

// CloneAs is Clone with every ID moved to another replica space, so that a
// warm-up pass and a timed pass never share a trace, span or request ID.
func (in Input) CloneAs(space uint64) []ptrace.Traces { return in.copies(space, true) }

// copies are the batches' copies in ID space space, with the receiver's
// attribute capacities (see keepCapacities) or exact ones.
func (in Input) copies(space uint64, receiverLayout bool) []ptrace.Traces {
	out := make([]ptrace.Traces, len(in.Batches))
	for i, td := range in.Batches {
		out[i] = ptrace.NewTraces()
		td.CopyTo(out[i])
		if receiverLayout {
			keepCapacities(out[i], in.attrCaps[i%len(in.attrCaps)])
		}
		if space > 0 {
			reID(out[i], space<<20)
		}
	}
	return out
}

// The receivers leave room in a span's attribute array: the Zipkin
// receiver sizes it for the span's tags and then appends the endpoint
// attributes, so Envoy's spans arrive with 12 attributes in an array of
// 22. CopyTo sizes the copy exactly, and a processor that adds an attribute
// (tracestitch, on the spans it moves) would then copy every array it
// touches, which it does not have to do on a receiver's output. So the
// copies get the capacities back (keepCapacities); pcommon.Map does not
// tell its capacity, so it is read through reflection (read only).

// attrCapacities returns the attribute capacity of each span of td.
func attrCapacities(td ptrace.Traces) []int {
	var caps []int
	pdatautil.EachSpan(td, func(s ptrace.Span) {
		caps = append(caps, reflect.ValueOf(s.Attributes()).Field(0).Elem().Cap())
	})
	return caps
}

// keepCapacities gives the spans of td, a copy, the attribute capacities
// caps of the original.
func keepCapacities(td ptrace.Traces, caps []int) {
	i := 0
	pdatautil.EachSpan(td, func(s ptrace.Span) {
		s.Attributes().EnsureCapacity(caps[i])
		i++
	})
}
