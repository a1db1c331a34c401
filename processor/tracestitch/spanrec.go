package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// maxRequestIDLen bounds accepted request IDs; longer values are ignored.
const maxRequestIDLen = 256

// spanRec is what the stitcher needs to know of one span. It is read once,
// when the span enters the buffer, so that stitching never walks pdata.
type spanRec struct {
	traceID  pcommon.TraceID
	spanID   pcommon.SpanID
	parentID pcommon.SpanID
	kind     ptrace.SpanKind
	start    pcommon.Timestamp
	end      pcommon.Timestamp
	// reqKey is the normalized request ID (see requestIDKey).
	reqKey reqKey
	// instance is the workload instance (first non-empty identity key).
	instance string
	// service is the resource service.name.
	service string
}

// recReader extracts spanRecs with the configured attribute keys.
type recReader struct {
	requestIDKeys []string
	identityKeys  []string
}

func newRecReader(cfg *Config) recReader {
	r := recReader{identityKeys: cfg.InstanceIdentity}
	if cfg.RequestID.Enabled {
		r.requestIDKeys = cfg.RequestID.Attributes
	}
	return r
}

// read fills a spanRec. invalid reports a request-ID attribute that was
// present but unusable (empty, not a string, too long).
func (r recReader) read(span ptrace.Span, res pcommon.Map, service string) (rec spanRec, invalid bool) {
	rec = spanRec{
		traceID:  span.TraceID(),
		spanID:   span.SpanID(),
		parentID: span.ParentSpanID(),
		kind:     span.Kind(),
		start:    span.StartTimestamp(),
		end:      span.EndTimestamp(),
		service:  service,
	}
	attrs := span.Attributes()
	for _, k := range r.requestIDKeys {
		v, ok := attrs.Get(k)
		if !ok {
			continue
		}
		if s, ok := requestIDValue(v); ok {
			rec.reqKey = requestIDKey(s)
			break
		}
		invalid = true
	}
	rec.instance = firstNonEmpty(r.identityKeys, attrs, res)
	return rec, invalid
}

// requestIDValue accepts a non-empty string of at most maxRequestIDLen bytes,
// or a slice whose first element is one (OTel semconv header attributes are
// string slices).
func requestIDValue(v pcommon.Value) (string, bool) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		s := v.Str()
		return s, s != "" && len(s) <= maxRequestIDLen
	case pcommon.ValueTypeSlice:
		if v.Slice().Len() == 0 {
			return "", false
		}
		first := v.Slice().At(0)
		if first.Type() != pcommon.ValueTypeStr {
			return "", false
		}
		s := first.Str()
		return s, s != "" && len(s) <= maxRequestIDLen
	default:
		return "", false
	}
}

// reqKey is a request ID normalized for comparison: a UUID as its 16 bytes
// (no allocation, case-insensitive), anything else as the string itself.
type reqKey struct {
	uuid  [16]byte
	other string
	set   bool
}

func (k reqKey) empty() bool { return !k.set }

// requestIDKey normalizes a request ID. Envoy's request IDs are UUIDs whose
// character 14 carries Envoy's trace decision and may be rewritten between
// hops, so that character is masked; other values compare exactly.
func requestIDKey(s string) reqKey {
	if u, ok := parseUUID(s); ok {
		u[6] &^= 0xf0 // character 14 is the high nibble of byte 6
		return reqKey{uuid: u, set: true}
	}
	return reqKey{other: s, set: true}
}

func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; i += 2 {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i--
			continue
		}
		hi, ok1 := fromHex(s[i])
		lo, ok2 := fromHex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
	}
	return u, j == 16
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// firstNonEmpty returns the first non-empty string value of keys, looking at
// the span's attributes before the resource's for each key.
func firstNonEmpty(keys []string, span, res pcommon.Map) string {
	for _, k := range keys {
		if v, ok := span.Get(k); ok && v.Type() == pcommon.ValueTypeStr && v.Str() != "" {
			return v.Str()
		}
		if v, ok := res.Get(k); ok && v.Type() == pcommon.ValueTypeStr && v.Str() != "" {
			return v.Str()
		}
	}
	return ""
}

func serviceName(res pcommon.Map) string {
	if v, ok := res.Get("service.name"); ok && v.Type() == pcommon.ValueTypeStr {
		return v.Str()
	}
	return ""
}
