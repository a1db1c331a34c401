// Keys: request IDs, instance identities, span IDs and interned service names.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"encoding/binary"
	"hash/maphash"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
) // reqKey is a request ID normalized for comparison, without pointers: a
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

// fold is the key's 64-bit key in the buffer's and the released-span
// indexes, never 0 (a collision there only gathers more fragments; the
// stitcher compares whole keys).
func (k reqKey) fold() uint64 {
	return max(binary.LittleEndian.Uint64(k.b[:8])^binary.LittleEndian.Uint64(k.b[8:])^uint64(k.form)<<56, 1)
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

func spanKey(id pcommon.SpanID) uint64 { return binary.BigEndian.Uint64(id[:]) }

// mix64 is splitmix64's finalizer: a bijection, so distinct keys never
// share a full hash.
func mix64(x uint64) uint64 {
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func serviceName(res pcommon.Map) string {
	if v, ok := res.Get("service.name"); ok && v.Type() == pcommon.ValueTypeStr {
		return v.Str()
	}
	return ""
}

// serviceID is an interned service name; 0 is unknown (or over the cap).
type serviceID uint16

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
