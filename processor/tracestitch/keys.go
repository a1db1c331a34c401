// Key mode: the stitch key every span of a released trace carries, so that a
// load-balancing exporter routes all fragments of a request to one
// stitching collector.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"encoding/hex"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// keySource says where a trace's stitch key came from.
type keySource uint8

const (
	// keyFromRoot: the request ID of a span without parent.
	keyFromRoot keySource = iota
	// keyFromSpan: a request ID found on another span of the trace.
	keyFromSpan
	// keyFromTraceID: the trace ID's low 64 bits (no request ID), so that
	// 64- and 128-bit fragments of one trace meet.
	keyFromTraceID
	// keyFromReleased: the key the trace left with earlier (late spans).
	keyFromReleased
	keySources
)

func (s keySource) String() string {
	return [...]string{"root_request_id", "request_id", "trace_id", "released"}[s]
}

// keyTally counts the keys of one emit for telemetry.
type keyTally struct {
	sources   [keySources]int64
	conflicts int64
}

// keyLabeler computes stitch keys and writes them on spans. It remembers
// the key each trace ID left with for late_span_ttl, for at most
// max_index_entries trace IDs, so that late spans of a trace get its key.
type keyLabeler struct {
	attr          string
	requestIDKeys []string
	ttl           int64 // ns
	maxTraces     int

	mu      sync.Mutex
	byTrace map[pcommon.TraceID]keyedTrace
	order   queue[rememberedTrace]
}

type keyedTrace struct {
	key string
	at  int64
}

type rememberedTrace struct {
	traceID pcommon.TraceID
	at      int64
}

func newKeyLabeler(cfg *Config) *keyLabeler {
	return &keyLabeler{
		attr:          cfg.KeyAttribute,
		requestIDKeys: cfg.RequestID.Attributes,
		ttl:           cfg.LateSpanTTL.Nanoseconds(),
		maxTraces:     cfg.MaxIndexEntries,
		byTrace:       make(map[pcommon.TraceID]keyedTrace),
	}
}

// label writes the stitch key of each group of u on all its spans.
func (l *keyLabeler) label(u *unit, now time.Time, t *keyTally) {
	at := now.UnixNano()
	for _, g := range u.groups {
		key, src, conflict := l.keyOf(g, at)
		t.sources[src]++
		if conflict {
			t.conflicts++
		}
		for _, p := range g.parts {
			for _, span := range p.spans.All() {
				span.Attributes().PutStr(l.attr, key)
			}
		}
	}
}

// keyOf is the key of group g's trace: the one it left with before, else
// computed from its spans and remembered.
func (l *keyLabeler) keyOf(g *group, at int64) (string, keySource, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(at)
	if k, ok := l.byTrace[g.traceID]; ok {
		return k.key, keyFromReleased, false
	}
	key, src, conflict := l.compute(g)
	if l.ttl > 0 && l.maxTraces > 0 {
		l.byTrace[g.traceID] = keyedTrace{key: key, at: at}
		l.order.push(rememberedTrace{traceID: g.traceID, at: at})
		l.expire(at)
	}
	return key, src, conflict
}

// compute reads the request IDs of g's spans: the key is a root's (a span
// without parent), else the first found, else the trace ID's low 64 bits.
// conflict reports two different request IDs in the trace.
func (l *keyLabeler) compute(g *group) (key string, src keySource, conflict bool) {
	var first, root string
	for _, p := range g.parts {
		for _, span := range p.spans.All() {
			rid, ok := l.requestID(span)
			if !ok {
				continue
			}
			switch {
			case first == "":
				first = rid
			case rid != first:
				conflict = true
			}
			if root == "" && span.ParentSpanID().IsEmpty() {
				root = rid
			}
		}
	}
	switch {
	case root != "":
		return root, keyFromRoot, conflict
	case first != "":
		return first, keyFromSpan, conflict
	}
	return hex.EncodeToString(g.traceID[8:]), keyFromTraceID, false
}

// requestID is the span's request ID as the stitcher compares it: a UUID
// with character 14 (Envoy's trace reason) masked, in lower case; any other
// value as it is.
func (l *keyLabeler) requestID(span ptrace.Span) (string, bool) {
	s, ok, _ := firstRequestID(span.Attributes(), l.requestIDKeys)
	if !ok {
		return "", false
	}
	return canonicalRequestID(s), true
}

// canonicalRequestID writes a request ID the way requestIDKey compares it.
func canonicalRequestID(s string) string {
	u, ok := parseUUID(s)
	if !ok {
		return s
	}
	u[6] &^= 0xf0
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// expire forgets the trace IDs remembered longer than the TTL, and the
// oldest ones past the bound (l.mu held).
func (l *keyLabeler) expire(at int64) {
	for l.order.len() > 0 {
		old := l.order.at(0)
		if at-old.at <= l.ttl && len(l.byTrace) <= l.maxTraces {
			return
		}
		l.order.pop()
		if k, ok := l.byTrace[old.traceID]; ok && k.at == old.at {
			delete(l.byTrace, old.traceID)
		}
	}
}
