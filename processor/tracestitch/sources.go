// Sources: the resources and scopes a batch's spans arrived under, shared
// by every span of the batch that arrived under an equal one.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"hash/maphash"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// batchSources finds, within one batch, the resource and scope a
// ResourceSpans or ScopeSpans repeats. A batch processor in front that
// concatenates many small payloads hands on one ResourceSpans per span or
// two; sharing equal ones keeps the memory per buffered span what it is for
// a batch of one resource, instead of a resource and a scope per span.
type batchSources struct {
	resources map[uint64][]*sourceResource
	scopes    map[scopeKey][]*source
}

type scopeKey struct {
	res  *sourceResource
	hash uint64
}

var sourceSeed = maphash.MakeSeed()

// resource returns the batch's resource equal to rs's, moving rs's out of
// the batch when it is the first of its kind.
func (b *batchSources) resource(rs ptrace.ResourceSpans, identity resourceIdentity) *sourceResource {
	if b.resources == nil {
		b.resources = make(map[uint64][]*sourceResource)
		b.scopes = make(map[scopeKey][]*source)
	}
	r := rs.Resource()
	h := hashAttrs(r.Attributes(), rs.SchemaUrl())
	for _, have := range b.resources[h] {
		if have.schemaURL == rs.SchemaUrl() && have.resource.DroppedAttributesCount() == r.DroppedAttributesCount() &&
			have.resource.Attributes().Equal(r.Attributes()) {
			return have
		}
	}
	res := &sourceResource{resource: pcommon.NewResource(), schemaURL: rs.SchemaUrl(), identity: identity}
	r.MoveTo(res.resource)
	b.resources[h] = append(b.resources[h], res)
	return res
}

// source returns the batch's source of res with a scope equal to ss's,
// moving ss's scope out of the batch when it is the first of its kind.
func (b *batchSources) source(res *sourceResource, ss ptrace.ScopeSpans) *source {
	sc := ss.Scope()
	key := scopeKey{res: res, hash: hashAttrs(sc.Attributes(), sc.Name(), sc.Version(), ss.SchemaUrl())}
	for _, have := range b.scopes[key] {
		if have.schemaURL == ss.SchemaUrl() && have.scope.Name() == sc.Name() && have.scope.Version() == sc.Version() &&
			have.scope.DroppedAttributesCount() == sc.DroppedAttributesCount() && have.scope.Attributes().Equal(sc.Attributes()) {
			return have
		}
	}
	src := &source{res: res, scope: pcommon.NewInstrumentationScope(), schemaURL: ss.SchemaUrl()}
	sc.MoveTo(src.scope)
	b.scopes[key] = append(b.scopes[key], src)
	return src
}

func (b *batchSources) reset() {
	clear(b.resources)
	clear(b.scopes)
}

// hashAttrs hashes attributes (in their order; a differently ordered equal
// map only misses the sharing) and strings.
func hashAttrs(m pcommon.Map, strs ...string) uint64 {
	var h maphash.Hash
	h.SetSeed(sourceSeed)
	for _, s := range strs {
		h.WriteString(s)
		h.WriteByte(0)
	}
	for k, v := range m.All() {
		h.WriteString(k)
		h.WriteByte(byte(v.Type()))
		if v.Type() == pcommon.ValueTypeStr {
			h.WriteString(v.Str())
		} else {
			h.WriteString(v.AsString())
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}
