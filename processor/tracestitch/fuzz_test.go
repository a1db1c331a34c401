package tracestitch

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.yaml.in/yaml/v3"

	"github.com/tracestitch/tracestitch/internal/pdatautil"
)

// fuzzTraces decodes bytes into spans drawn from small alphabets of IDs,
// request IDs and instances, so that collisions, cycles, shared pairs and
// ambiguity are common. 12 bytes per span. A span opens a resource of its
// own unless bit 4 of its first byte says it shares the previous span's
// (bit 5 then opens a new scope in it), so batches mix traces under one
// resource and scope, as receivers' batches do. Spans are numbered from
// first (attribute fuzz.span), resources and scopes by their first span.
func fuzzTraces(data []byte, first int) ptrace.Traces {
	td := ptrace.NewTraces()
	var rs ptrace.ResourceSpans
	var ss ptrace.ScopeSpans
	kinds := []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindClient, ptrace.SpanKindInternal, ptrace.SpanKindUnspecified}
	rids := []string{"", rid, rid14, ridOther, "not-a-uuid", "6F1C3B5E-2D7A-9C4E-8B1A-0C3D5E7F9A2B"}
	nodes := []string{"", pp1, pp2, rv1}
	for n := first; len(data) >= 12; n++ {
		b := data[:12]
		data = data[12:]
		if n == first || b[0]&0x10 == 0 {
			rs = td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", nodes[b[0]%4])
			rs.Resource().Attributes().PutInt("fuzz.resource", int64(n))
			rs.SetSchemaUrl(fmt.Sprintf("https://example.com/r%d", n))
		}
		if rs.ScopeSpans().Len() == 0 || b[0]&0x30 == 0x30 {
			ss = rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(fmt.Sprintf("scope%d", n))
			ss.SetSchemaUrl(fmt.Sprintf("https://example.com/s%d", n))
		}
		sp := ss.Spans().AppendEmpty()
		sp.Attributes().PutInt("fuzz.span", int64(n))
		var tid pcommon.TraceID
		tid[15] = b[1] % 5 // 0 is the empty trace ID
		if b[1]&0x80 != 0 {
			tid[0] = 0xab // a 128-bit twin with the same low bits
		}
		sp.SetTraceID(tid)
		sp.SetSpanID(pcommon.SpanID{7: b[2] % 9})
		sp.SetParentSpanID(pcommon.SpanID{7: b[3] % 9})
		sp.SetKind(kinds[b[4]%4])
		start := uint64(binary.BigEndian.Uint16(b[5:7]))
		end := uint64(binary.BigEndian.Uint16(b[7:9]))
		sp.SetStartTimestamp(pcommon.Timestamp(start * uint64(time.Millisecond)))
		sp.SetEndTimestamp(pcommon.Timestamp(end * uint64(time.Millisecond)))
		switch b[9] % 4 {
		case 0:
			sp.Attributes().PutStr("guid:x-request-id", rids[b[10]%6])
		case 1:
			sp.Attributes().PutEmptySlice("http.request.header.x-request-id").AppendEmpty().SetStr(rids[b[10]%6])
		case 2:
			sp.Attributes().PutInt("guid:x-request-id", int64(b[10]))
		}
		if n := nodes[b[11]%4]; n != "" {
			sp.Attributes().PutStr("node_id", n)
		}
	}
	return td
}

// FuzzStitch feeds arbitrary span soups through the processor, in one or
// two batches with a release in between (so the late index is used):
// no panic, no hang, every span leaves exactly once, and the shortcut for
// groups that never met another changes nothing (same spans out, same
// counts, as when every release gathers).
func FuzzStitch(f *testing.F) {
	f.Add([]byte("\x00\x01\x01\x00\x00\x00\x00\x00\x28\x00\x01\x01" + "\x00\x02\x02\x00\x01\x00\x03\x00\x22\x00\x01\x01"))
	f.Add([]byte("\x01\x01\x01\x02\x03\x00\x00\x00\x28\x00\x01\x01\x01\x02\x02\x01\x03\x00\x00\x00\x28\x00\x01\x01"))
	f.Add([]byte("\x00\x81\x01\x00\x00\x00\x00\x00\x28\x01\x00\x01\x00\x01\x01\x00\x01\x00\x00\x00\x28\x01\x00\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 12*400 {
			return
		}
		for _, mode := range []StitchMode{StitchModeReparent, StitchModeLink} {
			var runs [2]*harness
			for k, gatherAlways := range []bool{false, true} {
				h := newHarness(t, func(c *Config) { c.StitchMode = mode })
				h.p.buf.gatherAlways = gatherAlways
				split := len(data) / 24 * 12
				h.sendTraces(fuzzTraces(data[:split], 0))
				h.advance(2 * time.Second)
				h.sendTraces(fuzzTraces(data[split:], split/12))
				h.shutdown()
				requireSourcesKept(t, []ptrace.Traces{fuzzTraces(data[:split], 0), fuzzTraces(data[split:], split/12)}, h.sink.AllTraces())
				require.Equal(t, int64(h.in), h.counter("processor_tracestitch_spans_released"))
				var roots int64
				for _, n := range h.outcomes() {
					roots += n
				}
				if h.in > 0 {
					require.LessOrEqual(t, roots, int64(h.in), "at most one outcome per span")
				}
				runs[k] = h
			}
			short, full := runs[0], runs[1]
			require.Equal(t, canonical(full.out()), canonical(short.out()))
			require.Equal(t, full.outcomes(), short.outcomes())
			for _, c := range []string{"stitches", "ambiguous", "late_spans", "broken_propagation"} {
				require.Equal(t, full.counter("processor_tracestitch_"+c), short.counter("processor_tracestitch_"+c), c)
			}
		}
	})
}

// requireSourcesKept: every span left under the resource and scope it
// arrived with (attributes, names and schema URLs).
func requireSourcesKept(t *testing.T, in, out []ptrace.Traces) {
	source := func(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) string {
		return fmt.Sprint(rs.Resource().Attributes().AsRaw(), rs.SchemaUrl(), ss.Scope().Name(), ss.SchemaUrl())
	}
	each := func(tds []ptrace.Traces, f func(n int64, src string)) {
		for _, td := range tds {
			pdatautil.EachScope(td, func(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans) {
				for _, span := range ss.Spans().All() {
					n, _ := span.Attributes().Get("fuzz.span")
					f(n.Int(), source(rs, ss))
				}
			})
		}
	}
	want := map[int64]string{}
	each(in, func(n int64, src string) { want[n] = src })
	seen := 0
	each(out, func(n int64, src string) {
		seen++
		require.Equal(t, want[n], src, "span %d", n)
	})
	require.Equal(t, len(want), seen)
}

// FuzzConfig unmarshals arbitrary YAML into the config: an error or a
// config that validates and builds a working processor, never a panic.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("wait_duration: 1s\nmax_wait: 2s\nmax_buffered_spans: 10\n"))
	f.Add([]byte("stitch_mode: link\nrequest_id: {enabled: true, attributes: [a], time_tolerance: 5ms}\n"))
	f.Add([]byte("max_wait: -1s\ninstance_identity: []\n"))
	f.Add([]byte("late_span_ttl: 0s\nmax_index_entries: 0\nrequest_id: {attributes: [\"\"]}\n"))
	f.Add([]byte("release_batch_max_spans: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw map[string]any
		if yaml.Unmarshal(data, &raw) != nil {
			return
		}
		cfg := createDefaultConfig().(*Config)
		if confmap.NewFromStringMap(raw).Unmarshal(cfg) != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		require.Positive(t, cfg.WaitDuration)
		require.GreaterOrEqual(t, cfg.MaxWait, cfg.WaitDuration)
		require.Positive(t, cfg.MaxBufferedSpans)
		require.Positive(t, cfg.ReleaseBatchMaxSpans)
		h := newHarness(t, func(c *Config) { *c = *cfg })
		h.send(ts{trace: traceA, id: "1111111111111111", kind: S, service: pp, node: pp1, rid: rid, start: 0, end: 40},
			ts{trace: traceB, id: "2222222222222222", kind: C, service: pp, node: pp1, rid: rid, start: 3, end: 34})
		require.NoError(t, h.p.Shutdown(context.Background()))
		require.Equal(t, 2, h.sink.SpanCount())
	})
}

// canonical renders spans in a sorted, comparable form (fmt prints maps
// with sorted keys).
func canonical(spans []outSpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = fmt.Sprintf("%+v", s)
	}
	sort.Strings(out)
	return out
}
