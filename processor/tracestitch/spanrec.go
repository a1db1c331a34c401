package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"encoding/binary"
	"hash/maphash"
	"sync"

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

// requestIDOrphan: a span without parent, not an ingress, that the
// request-ID rule may hang under an ingress span (see
// stitcher.isRequestIDOrphan, which also knows whether the parent field
// resolved).
func (r *spanRec) requestIDOrphan() bool {
	return r.parentID.IsEmpty() && r.kind != ptrace.SpanKindServer && r.requestIDRuleApplies()
}

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

// reqKey is a request ID normalized for comparison, without pointers: a
// UUID as its 16 bytes (case-insensitive), anything else as a 128-bit keyed
// hash of the string.
type reqKey struct {
	b    [16]byte
	form reqKeyForm
}

type reqKeyForm uint8

const (
	reqKeyNone reqKeyForm = iota
	reqKeyUUID
	reqKeyHash
)

func (k reqKey) empty() bool { return k.form == reqKeyNone }

// hash64 folds the key into the 64-bit key of the buffer's index (a
// collision there only gathers more fragments; the stitcher compares whole
// keys).
func (k reqKey) hash64() uint64 {
	return binary.LittleEndian.Uint64(k.b[:8]) ^ binary.LittleEndian.Uint64(k.b[8:]) ^ uint64(k.form)<<56
}

// Seeds of the keyed hashes, random per process: inputs cannot be crafted
// to collide.
var (
	reqHashSeedLo, reqHashSeedHi = maphash.MakeSeed(), maphash.MakeSeed()
	instanceSeed                 = maphash.MakeSeed()
)

// requestIDKey normalizes a request ID. Envoy's request IDs are UUIDs whose
// character 14 carries Envoy's trace decision and may be rewritten between
// hops, so that character is masked; other values compare exactly (by a
// 128-bit keyed hash: a false match has probability 2^-128).
func requestIDKey(s string) reqKey {
	if u, ok := parseUUID(s); ok {
		u[6] &^= 0xf0 // character 14 is the high nibble of byte 6
		return reqKey{b: u, form: reqKeyUUID}
	}
	k := reqKey{form: reqKeyHash}
	binary.LittleEndian.PutUint64(k.b[:8], maphash.String(reqHashSeedLo, s))
	binary.LittleEndian.PutUint64(k.b[8:], maphash.String(reqHashSeedHi, s))
	return k
}

// instanceKey is a 64-bit keyed hash of an instance identity, 0 for none.
func instanceKey(s string) uint64 {
	if s == "" {
		return 0
	}
	return maphash.String(instanceSeed, s) | 1
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

// hexValues maps a byte to its hex digit value, 0xff for a non-digit.
var hexValues = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
		t[c-'a'+'A'] = byte(c-'a') + 10
	}
	return t
}()

func fromHex(c byte) (byte, bool) {
	v := hexValues[c]
	return v, v != 0xff
}

func serviceName(res pcommon.Map) string {
	if v, ok := res.Get("service.name"); ok && v.Type() == pcommon.ValueTypeStr {
		return v.Str()
	}
	return ""
}

// serviceID is an interned service name; 0 is unknown (or over the cap).
type serviceID uint16 // maxInternedServices fits

// maxInternedServices bounds the service table; later services are
// remembered as unknown.
const maxInternedServices = 10_000

// serviceTable interns service names so that records stay pointer-free.
// Service names are few; the cap keeps a misbehaving sender from growing it.
type serviceTable struct {
	mu    sync.RWMutex // batches are read before the buffer lock is taken
	ids   map[string]serviceID
	names []string
}

func newServiceTable() *serviceTable {
	return &serviceTable{ids: map[string]serviceID{"": 0}, names: []string{""}}
}

func (t *serviceTable) intern(name string) serviceID {
	t.mu.RLock()
	id, ok := t.ids[name]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[name]; ok {
		return id
	}
	if len(t.names) >= maxInternedServices {
		return 0
	}
	id = serviceID(len(t.names))
	t.ids[name] = id
	t.names = append(t.names, name)
	return id
}

func (t *serviceTable) name(id serviceID) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.names[id]
}
