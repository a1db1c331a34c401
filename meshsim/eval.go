package meshsim

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
)

// OutSpan is a span as it came out of the pipeline.
type OutSpan struct {
	TraceID  string // 32 hex
	SpanID   string
	ParentID string // "" for none
	Kind     string // SERVER, CLIENT, …
	// for display only
	Service    string
	StitchedBy string
}

// Key matches Span.Key.
func (o OutSpan) Key() string { return o.SpanID + "/" + o.Kind }

// FromTraces flattens pdata output.
func FromTraces(tds ...ptrace.Traces) []OutSpan {
	var out []OutSpan
	for _, td := range tds {
		pdatautil.EachSpan(td, func(s ptrace.Span) {
			out = append(out, OutSpan{
				TraceID:  s.TraceID().String(),
				SpanID:   s.SpanID().String(),
				ParentID: s.ParentSpanID().String(),
				Kind:     kindName(s.Kind()),
			})
		})
	}
	return out
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
	// parent; Recoverable of them a correct stitcher must reattach.
	Fragments, Recoverable int
	// Restored fragments (true edge present in the output), and those of
	// them that were recoverable.
	Restored, RestoredRecoverable int
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
			if joined {
				r.Restored++
				if s.Recoverable {
					r.RestoredRecoverable++
				}
			}
		}
	}
	in := make([]OutSpan, 0, len(spans))
	for _, s := range spans {
		in = append(in, OutSpan{TraceID: s.Trace32(), SpanID: s.IDHex(), ParentID: s.ParentHex(), Kind: s.Kind})
	}
	r.TracesBefore, r.DisconnectedBefore = Classify(in)
	r.TracesAfter, r.DisconnectedAfter = Classify(out)
	r.TracesTruth, r.DisconnectedTruth = expected(spans)
	return r
}

// Classify counts traces (by trace ID) and those that are not one tree
// under a SERVER root: several roots, a parent that is not there, or a
// CLIENT root (an egress that started a new trace).
func Classify(spans []OutSpan) (traces, disconnected int) {
	byTrace := map[string][]OutSpan{}
	var order []string
	for _, s := range spans {
		if _, ok := byTrace[s.TraceID]; !ok {
			order = append(order, s.TraceID)
		}
		byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
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
		roots, missing := 0, false
		var root OutSpan
		for _, s := range group {
			if s.Kind == "SERVER" && clients[s.SpanID] {
				continue // Zipkin shared pair: child of its CLIENT
			}
			if s.ParentID == "" || s.ParentID == s.SpanID {
				roots++
				root = s
				missing = missing || s.ParentID == s.SpanID
			} else if !ids[s.ParentID] {
				roots++
				missing = true
			}
		}
		traces++
		if roots != 1 || missing || root.Kind == "CLIENT" {
			disconnected++
		}
	}
	return traces, disconnected
}

// expected counts the traces an ideal stitcher emits: every unrecoverable
// fragment starts a trace of its own, which is disconnected (its root is an
// egress CLIENT span); every request's main tree is whole.
func expected(spans []*Span) (traces, disconnected int) {
	requests := map[int]bool{}
	for _, s := range spans {
		requests[s.Request] = true
		if s.Fragment && !s.Recoverable {
			traces++
			disconnected++
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
