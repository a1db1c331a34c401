// Span records: what the stitcher needs of a span, read once on arrival.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// maxRequestIDLen bounds accepted request IDs; longer values are ignored.
const maxRequestIDLen = 256

// spanRec is what the stitcher needs to know of one span. It is read once,
// when the span enters the buffer, so that stitching never walks pdata.
// It holds no pointers: the garbage collector never scans the records of
// the buffered spans.
type spanRec struct {
	traceID  pcommon.TraceID
	spanID   pcommon.SpanID
	parentID pcommon.SpanID
	start    pcommon.Timestamp
	end      pcommon.Timestamp
	// instance identifies the workload instance (first non-empty identity
	// key), see instanceKey; 0 when unknown.
	instance uint64
	// reqKey is the normalized request ID (see requestIDKey).
	reqKey reqKey
	kind   ptrace.SpanKind
	// service is the resource service.name, interned.
	service serviceID
}

// requestIDRuleApplies: the span has a request ID and a workload instance,
// without which the request-ID rule can neither use it as a parent nor
// find one for it.
func (r *spanRec) requestIDRuleApplies() bool { return !r.reqKey.empty() && r.instance != 0 }

// ingressCandidate: a SERVER span the request-ID rule may hang an orphan
// under (in the unit, or among released spans).
func (r *spanRec) ingressCandidate() bool {
	return r.kind == ptrace.SpanKindServer && r.requestIDRuleApplies()
}

// hasExt: the span has fields the buffer keeps apart (heldExt): a request
// ID, or a workload instance (SERVER spans and spans without parent).
func (r *spanRec) hasExt() bool { return !r.reqKey.empty() || r.instance != 0 }

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

// resourceIdentity is the identity a resource offers: the position of the
// first identity key it has a non-empty string for, and that string.
type resourceIdentity struct {
	at    int
	value string
}

// identityOf reads a resource's identity once for all its spans.
func (r *recReader) identityOf(res pcommon.Map) resourceIdentity {
	for j, k := range r.identityKeys {
		if v, ok := res.Get(k); ok && nonEmptyStr(v) {
			return resourceIdentity{at: j, value: v.Str()}
		}
	}
	return resourceIdentity{at: len(r.identityKeys)}
}

func nonEmptyStr(v pcommon.Value) bool { return v.Type() == pcommon.ValueTypeStr && v.Str() != "" }

// read fills a spanRec. invalid reports a request-ID attribute that was
// present but unusable (empty, not a string, too long). The instance is the
// first identity key with a non-empty string, the span's before the
// resource's for each key.
func (r *recReader) read(span ptrace.Span, res resourceIdentity, service serviceID) (rec spanRec, invalid bool) {
	rec = spanRec{
		traceID:  span.TraceID(),
		spanID:   span.SpanID(),
		parentID: span.ParentSpanID(),
		kind:     span.Kind(),
		start:    span.StartTimestamp(),
		end:      span.EndTimestamp(),
		service:  service,
	}
	// Only SERVER spans (where requests enter an instance: request-ID parent
	// candidates, and the evidence that an instance was serving) and spans
	// without a parent (candidate orphans, and the roots the outcome rule
	// judges) need attributes: the others' are not read at all, which is
	// most of the cost of reading.
	if rec.kind != ptrace.SpanKindServer && !rec.parentID.IsEmpty() {
		return rec, false
	}
	attrs := span.Attributes()
	s, ok, invalid := firstRequestID(attrs, r.requestIDKeys)
	if ok {
		rec.reqKey = requestIDKey(s)
	}
	instance := res.value
	// the span's own value counts for every key up to the resource's
	for j := 0; j <= res.at && j < len(r.identityKeys); j++ {
		if v, ok := attrs.Get(r.identityKeys[j]); ok && nonEmptyStr(v) {
			instance = v.Str()
			break
		}
	}
	rec.instance = instanceKey(instance)
	return rec, invalid
}

// firstRequestID returns the first usable request ID among keys, and
// whether an unusable value was passed over before it.
func firstRequestID(attrs pcommon.Map, keys []string) (id string, ok, invalid bool) {
	for _, k := range keys {
		v, found := attrs.Get(k)
		if !found {
			continue
		}
		if s, usable := requestIDValue(v); usable {
			return s, true, invalid
		}
		invalid = true
	}
	return "", false, invalid
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

// maxInternedServices fits
