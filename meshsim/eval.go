package meshsim

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// OutSpan is a span as it came out of the pipeline.
type OutSpan struct {
	TraceID  string // 32 hex
	SpanID   string
	ParentID string // "" for none
	Kind     string // SERVER, CLIENT, …
	// Instance is the workload instance that reported the span, as the
	// processor's default instance_identity reads it; Start and End in ns.
	Instance   string
	Start, End int64
	// for display only
	Service    string
	StitchedBy string
}

// Key matches Span.Key.
func (o OutSpan) Key() string { return o.SpanID + "/" + o.Kind }

// identityKeys are the processor's default instance_identity keys.
var identityKeys = []string{"node_id", "k8s.pod.name", "service.instance.id", "host.name", "service.name"}

// FromTraces flattens pdata output.
func FromTraces(tds ...ptrace.Traces) []OutSpan {
	var out []OutSpan
	for _, td := range tds {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			res := rss.At(i).Resource().Attributes()
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				for _, s := range sss.At(j).Spans().All() {
					out = append(out, OutSpan{
						TraceID:  s.TraceID().String(),
						SpanID:   s.SpanID().String(),
						ParentID: s.ParentSpanID().String(),
						Kind:     kindName(s.Kind()),
						Instance: instanceOf(s.Attributes(), res),
						Start:    int64(s.StartTimestamp()),
						End:      int64(s.EndTimestamp()),
					})
				}
			}
		}
	}
	return out
}

// instanceOf is the first identity key with a non-empty string value, the
// span's before the resource's.
func instanceOf(span, res pcommon.Map) string {
	for _, k := range identityKeys {
		for _, m := range []pcommon.Map{span, res} {
			if v, ok := m.Get(k); ok && v.Type() == pcommon.ValueTypeStr && v.Str() != "" {
				return v.Str()
			}
		}
	}
	return ""
}

func kindName(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindServer:
		return "SERVER"
	case ptrace.SpanKindClient:
		return "CLIENT"
	case ptrace.SpanKindProducer:
		return "PRODUCER"
	case ptrace.SpanKindConsumer:
		return "CONSUMER"
	case ptrace.SpanKindInternal:
		return "INTERNAL"
	}
	return "UNSPECIFIED"
}

// Report compares pipeline output with the ground truth.
type Report struct {
	Spans, Lost, Duplicated int
	// Fragments: spans that start a new trace ID although they have a true
	// parent; Recoverable of them a correct stitcher must reattach. Unseen:
	// fragments that cannot be reattached and that the outcome rule cannot
	// see as lost either (no SERVER span of their instance contains them:
	// calls that outlive their request).
	Fragments, Recoverable, Unseen int
	// Restored fragments (true edge present in the output), and those of
	// them that were recoverable.
	Restored, RestoredRecoverable int
	// ParentFirst: recoverable fragments whose true parent reached the
	// collector no later than they did, and those of them restored. A
	// streaming stitcher can always join these.
	ParentFirst, RestoredParentFirst int
	// WrongEdges: spans the pipeline changed into something that is not
	// their true edge. Must be 0.
	WrongEdges int
	// Traces and disconnected traces before (input), after (output) and as
	// the ground truth expects after ideal stitching.
	TracesBefore, DisconnectedBefore int
	TracesAfter, DisconnectedAfter   int
	TracesTruth, DisconnectedTruth   int
	Examples                         []string // a few wrong edges, for debugging
}

// Recall of recoverable fragments (1 when there are none).
func (r Report) Recall() float64 {
	if r.Recoverable == 0 {
		return 1
	}
	return float64(r.RestoredRecoverable) / float64(r.Recoverable)
}

// RecallParentFirst is the recall of the recoverable fragments whose parent
// arrived first (1 when there are none).
func (r Report) RecallParentFirst() float64 {
	if r.ParentFirst == 0 {
		return 1
	}
	return float64(r.RestoredParentFirst) / float64(r.ParentFirst)
}

func share(d, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(n)
}

func (r Report) ShareBefore() float64 { return share(r.DisconnectedBefore, r.TracesBefore) }
func (r Report) ShareAfter() float64  { return share(r.DisconnectedAfter, r.TracesAfter) }
func (r Report) ShareTruth() float64  { return share(r.DisconnectedTruth, r.TracesTruth) }

// Evaluate checks out against the truth in spans.
func Evaluate(spans []*Span, out []OutSpan) Report {
	r := Report{Spans: len(spans)}
	outBy := make(map[string]OutSpan, len(out))
	for _, o := range out {
		if _, dup := outBy[o.Key()]; dup {
			r.Duplicated++
		}
		outBy[o.Key()] = o
	}
	byKey := make(map[string]*Span, len(spans))
	for _, s := range spans {
		byKey[s.Key] = s
	}
	for _, s := range spans {
		if s.Fragment {
			r.Fragments++
			if s.Recoverable {
				r.Recoverable++
			}
			if s.Unseen {
				r.Unseen++
			}
		}
		o, ok := outBy[s.Key]
		if !ok {
			r.Lost++
			continue
		}
		p := byKey[s.TrueParent]
		joined := false
		if p != nil {
			if po, ok := outBy[p.Key]; ok && po.TraceID == o.TraceID {
				sharedPair := s.Kind == "SERVER" && p.Kind == "CLIENT" && s.ID == p.ID
				joined = o.ParentID == p.IDHex() || sharedPair
			}
		}
		changed := o.TraceID != s.Trace32() || o.ParentID != s.ParentHex()
		if changed && !joined {
			r.WrongEdges++
			if len(r.Examples) < 5 {
				r.Examples = append(r.Examples, fmt.Sprintf("%s moved to trace %s parent %q; true parent %s", s.Key, o.TraceID, o.ParentID, s.TrueParent))
			}
		}
		if s.Fragment {
			parentFirst := s.Recoverable && p != nil && !p.Arrival.After(s.Arrival)
			if parentFirst {
				r.ParentFirst++
			}
			if joined {
				r.Restored++
				if s.Recoverable {
					r.RestoredRecoverable++
				}
				if parentFirst {
					r.RestoredParentFirst++
				}
			}
		}
	}
	in := make([]OutSpan, 0, len(spans))
	for _, s := range spans {
		in = append(in, s.Out())
	}
	r.TracesBefore, r.DisconnectedBefore = Classify(in)
	r.TracesAfter, r.DisconnectedAfter = Classify(out)
	r.TracesTruth, r.DisconnectedTruth = expected(spans)
	return r
}

// Out is the span as the pipeline receives it.
func (s *Span) Out() OutSpan {
	return OutSpan{
		TraceID: s.Trace32(), SpanID: s.IDHex(), ParentID: s.ParentHex(), Kind: s.Kind,
		Instance: s.instance(), Start: s.Start.UnixNano(), End: s.End.UnixNano(),
	}
}

// instance is the span's instance as FromTraces reads it from pdata.
func (s *Span) instance() string {
	if n := s.Tags["node_id"]; n != "" {
		return n
	}
	if s.Source == SourceOTel {
		return s.Pod
	}
	return s.Service
}

// Classify counts traces (by trace ID) and the disconnected ones, by the
// processor's outcome rule: a trace is disconnected when it is not one
// tree (several roots, a parent that is not there) or when its root lost
// its context: a root that is neither SERVER nor CONSUMER, made while a
// SERVER span of its own instance contained it. A gateway's or a client
// pod's CLIENT root is a legitimate start.
func Classify(spans []OutSpan) (traces, disconnected int) {
	byTrace := map[string][]OutSpan{}
	servers := map[string][]OutSpan{}
	var order []string
	for _, s := range spans {
		if _, ok := byTrace[s.TraceID]; !ok {
			order = append(order, s.TraceID)
		}
		byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
		if s.Kind == "SERVER" && s.Instance != "" {
			servers[s.Instance] = append(servers[s.Instance], s)
		}
	}
	serving := func(r OutSpan) bool {
		for _, c := range servers[r.Instance] {
			if c.Start <= r.Start && c.End >= r.End {
				return true
			}
		}
		return false
	}
	for _, tid := range order {
		group := byTrace[tid]
		ids := map[string]bool{}
		clients := map[string]bool{}
		for _, s := range group {
			ids[s.SpanID] = true
			if s.Kind == "CLIENT" {
				clients[s.SpanID] = true
			}
		}
		roots, lost := 0, false
		for _, s := range group {
			if s.Kind == "SERVER" && clients[s.SpanID] {
				continue // Zipkin shared pair: child of its CLIENT
			}
			switch {
			case s.ParentID == "":
				roots++
				lost = lost || (s.Kind != "SERVER" && s.Kind != "CONSUMER" && s.Instance != "" && serving(s))
			case s.ParentID == s.SpanID || !ids[s.ParentID]:
				roots++
				lost = true
			}
		}
		traces++
		if roots != 1 || lost {
			disconnected++
		}
	}
	return traces, disconnected
}

// expected counts the traces an ideal stitcher emits: every unrecoverable
// fragment starts a trace of its own, which the outcome rule counts as
// disconnected unless it is unseen; every request's main tree is whole.
func expected(spans []*Span) (traces, disconnected int) {
	requests := map[int]bool{}
	for _, s := range spans {
		requests[s.Request] = true
		if s.Fragment && !s.Recoverable {
			traces++
			if !s.Unseen {
				disconnected++
			}
		}
	}
	return traces + len(requests), disconnected
}

// ExpectedTraceIDs lists the trace IDs (32 hex) an ideal stitcher emits:
// each span ends up in the trace of the top of its chain of kept edges
// (every edge but an unrecoverable fragment's).
func ExpectedTraceIDs(spans []*Span) []string {
	byKey := make(map[string]*Span, len(spans))
	for _, s := range spans {
		byKey[s.Key] = s
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range spans {
		top := s
		for top.TrueParent != "" && (!top.Fragment || top.Recoverable) {
			top = byKey[top.TrueParent]
		}
		if id := top.Trace32(); !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
