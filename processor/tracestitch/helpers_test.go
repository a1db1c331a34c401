package tracestitch

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
)

// base is the start of every test request, in ns.
const base = int64(1_764_010_000_000_000_000)

// ts describes one test span. Times are ms after base. IDs are hex; 16-hex
// trace IDs are padded like the Zipkin receiver pads 64-bit IDs.
type ts struct {
	trace, id, parent string
	kind              ptrace.SpanKind
	start, end        int64
	service, node     string
	rid               string
	attrs             map[string]any
}

func traceID(t testing.TB, s string) pcommon.TraceID {
	t.Helper()
	if len(s) == 16 {
		s = "0000000000000000" + s
	}
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	require.Len(t, b, 16)
	return pcommon.TraceID(b)
}

func spanID(t testing.TB, s string) pcommon.SpanID {
	t.Helper()
	if s == "" {
		return pcommon.SpanID{}
	}
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	require.Len(t, b, 8)
	return pcommon.SpanID(b)
}

// build puts each span in its own ResourceSpans, as the Zipkin receiver does
// for spans of different services.
func build(t testing.TB, spans ...ts) ptrace.Traces {
	t.Helper()
	td := ptrace.NewTraces()
	for _, s := range spans {
		rs := td.ResourceSpans().AppendEmpty()
		if s.service != "" {
			rs.Resource().Attributes().PutStr("service.name", s.service)
		}
		sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sp.SetTraceID(traceID(t, s.trace))
		sp.SetSpanID(spanID(t, s.id))
		sp.SetParentSpanID(spanID(t, s.parent))
		sp.SetKind(s.kind)
		sp.SetName(s.service + " " + s.id)
		sp.SetStartTimestamp(pcommon.Timestamp(base + s.start*int64(time.Millisecond)))
		sp.SetEndTimestamp(pcommon.Timestamp(base + s.end*int64(time.Millisecond)))
		if s.node != "" {
			sp.Attributes().PutStr("node_id", s.node)
		}
		if s.rid != "" {
			sp.Attributes().PutStr("guid:x-request-id", s.rid)
		}
		require.NoError(t, sp.Attributes().FromRaw(mergeAttrs(sp.Attributes().AsRaw(), s.attrs)))
	}
	return td
}

func mergeAttrs(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// loadZipkin reads a Zipkin v2 JSON fixture through the contrib translator
// the zipkin receiver uses, so fixtures look exactly as in a collector.
func loadZipkin(t testing.TB, name string) ptrace.Traces {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "samples", name))
	require.NoError(t, err)
	td, err := zipkinv2.NewJSONTracesUnmarshaler(false).UnmarshalTraces(b)
	require.NoError(t, err)
	return td
}

// outSpan is a released span, flattened for assertions.
type outSpan struct {
	traceID, spanID, parentID string
	kind                      ptrace.SpanKind
	attrs                     map[string]any
	links                     []string
}

func flatten(tds ...ptrace.Traces) []outSpan {
	var out []outSpan
	for _, td := range tds {
		pdatautil.EachSpan(td, func(s ptrace.Span) {
			o := outSpan{
				traceID:  s.TraceID().String(),
				spanID:   s.SpanID().String(),
				parentID: s.ParentSpanID().String(),
				kind:     s.Kind(),
				attrs:    s.Attributes().AsRaw(),
			}
			for l := 0; l < s.Links().Len(); l++ {
				o.links = append(o.links, s.Links().At(l).TraceID().String()+"/"+s.Links().At(l).SpanID().String())
			}
			out = append(out, o)
		})
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].spanID != out[b].spanID {
			return out[a].spanID < out[b].spanID
		}
		return out[a].kind < out[b].kind
	})
	return out
}

// find returns the released span with that span ID and kind.
func find(t testing.TB, spans []outSpan, id string, kind ptrace.SpanKind) outSpan {
	t.Helper()
	for _, s := range spans {
		if s.spanID == id && s.kind == kind {
			return s
		}
	}
	require.Failf(t, "span not released", "%s %v", id, kind)
	return outSpan{}
}
