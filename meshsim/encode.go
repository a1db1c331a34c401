package meshsim

import (
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// zipkinSpan is Zipkin's v2 JSON span, as Envoy's Zipkin tracer posts it.
type zipkinSpan struct {
	TraceID       string             `json:"traceId"`
	ID            string             `json:"id"`
	ParentID      string             `json:"parentId,omitempty"`
	Kind          string             `json:"kind"`
	Shared        bool               `json:"shared,omitempty"`
	Name          string             `json:"name"`
	Timestamp     int64              `json:"timestamp"`
	Duration      int64              `json:"duration"`
	LocalEndpoint zipkinEndpoint     `json:"localEndpoint"`
	Annotations   []zipkinAnnotation `json:"annotations,omitempty"`
	Tags          map[string]string  `json:"tags"`
}

type zipkinAnnotation struct {
	Timestamp int64  `json:"timestamp"`
	Value     string `json:"value"`
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName"`
	IPv4        string `json:"ipv4,omitempty"`
}

// ZipkinJSON encodes the Envoy spans among spans as a Zipkin v2 JSON array.
func ZipkinJSON(spans []*Span) ([]byte, error) {
	out := make([]zipkinSpan, 0, len(spans))
	for _, s := range spans {
		if s.Source != SourceEnvoy {
			continue
		}
		z := zipkinSpan{
			TraceID: s.TraceIDHex(), ID: s.IDHex(), ParentID: s.ParentHex(),
			Kind: s.Kind, Shared: s.Shared, Name: s.Name,
			Timestamp:     s.Start.UnixMicro(),
			Duration:      max(s.End.Sub(s.Start).Microseconds(), 1),
			LocalEndpoint: zipkinEndpoint{ServiceName: s.Service, IPv4: s.IP},
			Tags:          s.Tags,
		}
		if !s.Annotation.IsZero() {
			// Envoy's one annotation: client receive or server send
			value := "ss"
			if s.Kind == "CLIENT" {
				value = "cr"
			}
			z.Annotations = []zipkinAnnotation{{Timestamp: s.Annotation.UnixMicro(), Value: value}}
		}
		out = append(out, z)
	}
	return json.Marshal(out)
}

// OTLP builds the OTel SDK app spans among spans, one resource per pod.
func OTLP(spans []*Span) ptrace.Traces {
	td := ptrace.NewTraces()
	byPod := map[string]ptrace.SpanSlice{}
	for _, s := range spans {
		if s.Source != SourceOTel {
			continue
		}
		dest, ok := byPod[s.Pod]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", s.Service)
			rs.Resource().Attributes().PutStr("k8s.pod.name", s.Pod)
			rs.Resource().Attributes().PutStr("host.name", s.Pod)
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("meshsim/app")
			dest = ss.Spans()
			byPod[s.Pod] = dest
		}
		sp := dest.AppendEmpty()
		sp.SetTraceID(pcommon.TraceID(s.TraceID))
		sp.SetSpanID(spanID(s.ID))
		sp.SetParentSpanID(spanID(s.ParentID))
		sp.SetName(s.Name)
		if s.Kind == "SERVER" {
			sp.SetKind(ptrace.SpanKindServer)
		} else {
			sp.SetKind(ptrace.SpanKindClient)
		}
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.Start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(s.End))
		for k, v := range s.Tags {
			if k == "http.request.header.x-request-id" {
				sp.Attributes().PutEmptySlice(k).AppendEmpty().SetStr(v)
				continue
			}
			sp.Attributes().PutStr(k, v)
		}
	}
	return td
}

func spanID(id uint64) pcommon.SpanID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	return pcommon.SpanID(b)
}

// Traces converts spans to pdata as a collector would receive them: Envoy
// spans through the contrib Zipkin v2 translator (the zipkin receiver's),
// app spans as OTLP.
func Traces(spans []*Span) (ptrace.Traces, error) {
	td := OTLP(spans)
	b, err := ZipkinJSON(spans)
	if err != nil {
		return td, err
	}
	zt, err := zipkinv2.NewJSONTracesUnmarshaler(false).UnmarshalTraces(b)
	if err != nil {
		return td, err
	}
	zt.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	return td, nil
}

// Batches splits spans (in arrival order) into batches of what arrived
// within each window, as sidecars flushing periodically deliver them.
func Batches(spans []*Span, window time.Duration) [][]*Span {
	var out [][]*Span
	var cur []*Span
	var end time.Time
	for _, s := range spans {
		if len(cur) > 0 && s.Arrival.After(end) {
			out = append(out, cur)
			cur = nil
		}
		if len(cur) == 0 {
			end = s.Arrival.Add(window)
		}
		cur = append(cur, s)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
