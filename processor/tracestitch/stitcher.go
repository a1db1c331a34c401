// The stitcher: parents, trace IDs and outcomes of a unit, as a pure function.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"slices"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// The stitcher is pure: it takes the records of one release unit (spans of
// every trace ID that may belong to the same request) and what is known of
// already released spans, and decides parents, trace IDs and outcomes. It
// never touches pdata, so it is table-testable.

type outcome int

const (
	outcomeConnected outcome = iota
	outcomeStitched
	outcomeDisconnected
)

func (o outcome) String() string {
	switch o {
	case outcomeStitched:
		return "stitched"
	case outcomeDisconnected:
		return "disconnected"
	default:
		return "connected"
	}
}

type stitchMethod uint8

const (
	methodNone stitchMethod = iota
	methodParentID
	methodRequestID
)

func (m stitchMethod) String() string {
	switch m {
	case methodParentID:
		return "parent_id"
	case methodRequestID:
		return "request_id"
	default:
		return ""
	}
}

// releasedSpan is what the index of released spans keeps per span ID.
type releasedSpan struct {
	traceID pcommon.TraceID
	// ambiguous: spans with this ID left in different traces.
	ambiguous bool
}

// releasedServer is what the index keeps per released SERVER span with a
// request ID: enough to be a request-ID parent candidate.
type releasedServer struct {
	traceID  pcommon.TraceID
	spanID   pcommon.SpanID
	instance uint64
	start    pcommon.Timestamp
	end      pcommon.Timestamp
	service  serviceID
}

// releasedLookup answers questions about spans released earlier.
type releasedLookup interface {
	span(id pcommon.SpanID) (releasedSpan, bool)
	// trace maps a released trace ID to the trace ID it left with.
	trace(id pcommon.TraceID) (pcommon.TraceID, bool)
	// ingress appends the released ingress spans with request ID key.
	ingress(key reqKey, out []releasedServer) []releasedServer
}

// servingLookup tells whether an instance was serving a request: whether
// one of its SERVER spans contains [start, end], with tol of slack.
type servingLookup interface {
	serving(instance uint64, start, end pcommon.Timestamp, tol uint64) bool
}

type stitchOptions struct {
	requestID bool
	// tolerance is the slack, in nanoseconds, of the time containment rule.
	tolerance uint64
	// link keeps request-ID fragments in their own trace (a span link is
	// added instead of moving them).
	link bool
	// serving answers the outcome rule's question about roots (nil: no
	// root is evidence of lost context by itself).
	serving servingLookup
	// entryPoints are services whose roots always start a request.
	entryPoints map[serviceID]bool
}

// parentKind says how a span's parent was resolved.
type parentKind uint8

const (
	parentNone      parentKind = iota // empty parent span ID: a true root
	parentInUnit                      // parent is another record of the unit
	parentReleased                    // parent was released earlier
	parentMissing                     // parent span ID set but not found
	parentAmbiguous                   // parent span ID matches several spans
	parentCycle                       // self-parent or the edge would close a cycle
)

// stitchResult is the decision for one unit. Slices are indexed like the
// input records.
type stitchResult struct {
	// traceID is the trace ID each span leaves with, and stitchedBy is set
	// on fragment roots the processor attached. Both are nil when the unit
	// leaves exactly as it came (most units): see final for trace IDs.
	traceID    []pcommon.TraceID
	stitchedBy []stitchMethod
	// newParent is the parent span ID set by a request-ID stitch (the span
	// kept its parent otherwise); linkTo holds it instead in link mode.
	newParent map[int]pcommon.SpanID
	linkTo    map[int]spanLink

	traces    []outcome // one per logical trace that was not only late spans
	stitches  [3]int    // indexed by stitchMethod
	ambiguous int
	lateSpans int
	blame     []string // one service per fragment left with its context lost
}

type spanLink struct {
	traceID pcommon.TraceID
	spanID  pcommon.SpanID
}

type stitcher struct {
	names *serviceTable
	recs  []spanRec
	rel   releasedLookup
	opts  stitchOptions

	// byID finds a unit's records by span ID: the table holds the first
	// record with an ID, sameID chains the others in record order. Both are
	// scratch, sized to the unit on each run.
	byID     idTable
	sameID   []int32
	parent   []int32 // in-unit parent, -1 if none
	kind     []parentKind
	method   []stitchMethod
	released []releasedEdge // parents found among released spans
	uf       unionFind

	// scratch of the request-ID pass and of outcomes, reused across units
	servers  map[reqKey]idxList
	orphans  []int32
	relSrv   []releasedServer
	states   []traceState
	stateIdx map[pcommon.TraceID]int32
	topState []int32
	lostTop  []bool
	topBuf   [2][]int32
	path     []int32
	// final is the trace ID each record leaves with, valid until the next
	// run (the result keeps a copy only when something changed).
	final []pcommon.TraceID
}

// firstWithID returns the first record whose span ID is id, -1 if none;
// s.sameID[j] is the next after j.
func (s *stitcher) firstWithID(id pcommon.SpanID) int32 {
	if j, ok := s.byID.get(spanKey(id)); ok {
		return int32(j)
	}
	return -1
}

// idxList holds the records with one key; almost always one, kept inline.
type idxList struct {
	first int32
	more  []int32
}

func (l idxList) len() int { return 1 + len(l.more) }

func (l idxList) at(i int) int32 {
	if i == 0 {
		return l.first
	}
	return l.more[i-1]
}

func addIdx[K comparable](m map[K]idxList, k K, i int32) {
	if l, ok := m[k]; ok {
		l.more = append(l.more, i)
		m[k] = l
		return
	}
	m[k] = idxList{first: i}
}

type traceState struct {
	traceID      pcommon.TraceID
	roots        int
	stitched     bool
	lost         bool // a top is evidence of lost context
	disconnected bool
}

func newStitcher(names *serviceTable) *stitcher {
	return &stitcher{
		names:    names,
		servers:  make(map[reqKey]idxList),
		stateIdx: make(map[pcommon.TraceID]int32),
	}
}

type releasedEdge struct {
	ok      bool
	traceID pcommon.TraceID
	spanID  pcommon.SpanID
}

// run stitches one unit, reusing the stitcher's scratch memory (the
// returned result is freshly allocated and outlives the next run).
func (s *stitcher) run(recs []spanRec, rel releasedLookup, opts stitchOptions) stitchResult {
	n := len(recs)
	s.recs, s.rel, s.opts = recs, rel, opts
	s.byID.reset(n)
	s.sameID = grow(s.sameID, n)
	s.parent = grow(s.parent, n)
	s.kind = grow(s.kind, n)
	s.method = grow(s.method, n)
	s.released = grow(s.released, n)
	s.uf.p = grow(s.uf.p, n)
	for i := n - 1; i >= 0; i-- { // backwards, so that chains are in record order
		s.parent[i] = -1
		s.uf.p[i] = int32(i)
		s.sameID[i] = -1
		if id := recs[i].spanID; !id.IsEmpty() {
			if next, had := s.byID.swap(spanKey(id), uint32(i)); had {
				s.sameID[i] = int32(next)
			}
		}
	}
	for i := range recs {
		s.resolveParent(i)
	}
	if opts.requestID {
		s.stitchByRequestID()
	}
	if rel != nil {
		s.joinReleasedTraces()
	}
	return s.result()
}

// resolveParent links span i to its parent by span ID, inside the unit or
// among released spans.
func (s *stitcher) resolveParent(i int) {
	r := &s.recs[i]
	// Zipkin shared context: a SERVER span with the span ID of a CLIENT span
	// of the same trace is that CLIENT's child, whatever its parent field says.
	if r.kind == ptrace.SpanKindServer && !r.spanID.IsEmpty() {
		if j, ok := s.sharedClient(i); ok {
			s.addEdge(i, j, methodNone)
			return
		}
	}
	p := r.parentID
	switch {
	case p.IsEmpty():
		s.kind[i] = parentNone
		return
	case p == r.spanID:
		s.kind[i] = parentCycle
		return
	}
	if j, found, ambiguous := s.spanByID(i, p); ambiguous {
		s.kind[i] = parentAmbiguous
		return
	} else if found {
		m := methodNone
		if s.recs[j].traceID != r.traceID {
			m = methodParentID
		}
		s.addEdge(i, j, m)
		return
	}
	if s.rel != nil {
		if rs, ok := s.rel.span(p); ok && rs.ambiguous {
			s.kind[i] = parentAmbiguous
			return
		} else if ok {
			s.kind[i] = parentReleased
			s.released[i] = releasedEdge{ok: true, traceID: rs.traceID, spanID: p}
			if rs.traceID != r.traceID {
				s.method[i] = methodParentID
			}
			return
		}
	}
	s.kind[i] = parentMissing
}

// joinReleasedTraces sends roots that nothing else claimed and whose own
// trace was already released after that trace: they are its late spans (a
// root whose children left earlier, a span whose parent left and expired),
// not a new trace to count.
func (s *stitcher) joinReleasedTraces() {
	for i := range s.recs {
		if k := s.kind[i]; k != parentNone && k != parentMissing {
			continue
		}
		if final, ok := s.rel.trace(s.recs[i].traceID); ok {
			s.kind[i] = parentReleased
			s.released[i] = releasedEdge{ok: true, traceID: final}
		}
	}
}

// sharedClient finds the single CLIENT span of i's trace that shares i's ID.
func (s *stitcher) sharedClient(i int) (int, bool) {
	found := -1
	for j := s.firstWithID(s.recs[i].spanID); j >= 0; j = s.sameID[j] {
		if int(j) == i || s.recs[j].kind != ptrace.SpanKindClient || s.recs[j].traceID != s.recs[i].traceID {
			continue
		}
		if found >= 0 {
			return -1, false
		}
		found = int(j)
	}
	return found, found >= 0
}

// spanByID resolves a parent span ID to one record. Spans of the child's own
// trace win; a CLIENT/SERVER pair sharing the ID counts as one node (its
// SERVER side, which is where the callee's children hang).
func (s *stitcher) spanByID(child int, id pcommon.SpanID) (int, bool, bool) {
	same, other := -1, -1
	nSame, nOther := 0, 0
	for j := s.firstWithID(id); j >= 0; j = s.sameID[j] {
		if int(j) == child {
			continue
		}
		if s.recs[j].traceID == s.recs[child].traceID {
			same, nSame = pickNode(s.recs, same, int(j), nSame)
		} else {
			other, nOther = pickNode(s.recs, other, int(j), nOther)
		}
	}
	switch {
	case nSame == 1:
		return same, true, false
	case nSame > 1:
		return -1, false, true
	case nOther == 1:
		return other, true, false
	case nOther > 1:
		return -1, false, true
	}
	return -1, false, false
}

// pickNode accumulates candidates for one span ID, folding a shared-context
// CLIENT/SERVER pair of one trace into its SERVER side.
func pickNode(recs []spanRec, cur, next, n int) (int, int) {
	if n == 0 {
		return next, 1
	}
	if n == 1 && recs[cur].traceID == recs[next].traceID {
		ck, nk := recs[cur].kind, recs[next].kind
		if ck == ptrace.SpanKindClient && nk == ptrace.SpanKindServer {
			return next, 1
		}
		if ck == ptrace.SpanKindServer && nk == ptrace.SpanKindClient {
			return cur, 1
		}
	}
	return cur, n + 1
}

// addEdge makes j the parent of i unless that closes a cycle.
func (s *stitcher) addEdge(i, j int, m stitchMethod) bool {
	// i has no parent edge yet, so it is the root of its tree: the edge
	// closes a cycle exactly when j is already in that tree.
	if !s.uf.union(i, j) {
		s.kind[i] = parentCycle
		return false
	}
	s.parent[i] = int32(j)
	s.kind[i] = parentInUnit
	s.method[i] = m
	return true
}

// stitchByRequestID attaches orphan fragment roots to the one ingress span
// of their own service and workload instance that carries the same request
// ID and contains them in time. Several qualifying spans: no edge, counted.
func (s *stitcher) stitchByRequestID() {
	// Most units have no orphan: then there is nothing to index. Only
	// ingress spans of an orphan's service and instance can be its parent.
	s.orphans = s.orphans[:0]
	for i := range s.recs {
		if s.isRequestIDOrphan(i) {
			s.orphans = append(s.orphans, int32(i))
		}
	}
	if len(s.orphans) == 0 {
		return
	}
	servers := s.servers
	clear(servers)
	for i := range s.recs {
		if r := &s.recs[i]; r.ingressCandidate() && s.sameInstanceAsOrphan(r) {
			addIdx(servers, r.reqKey, int32(i))
		}
	}
	for _, o := range s.orphans {
		i := int(o)
		r := &s.recs[i]
		found, n := -1, 0
		cands, ok := servers[r.reqKey]
		for k := 0; ok && k < cands.len(); k++ {
			j := cands.at(k)
			c := &s.recs[j]
			if c.service == r.service && c.instance == r.instance && s.contains(c.start, c.end, r) && !s.uf.same(i, int(j)) {
				found = int(j)
				n++
			}
		}
		var rel releasedServer
		if s.rel != nil {
			s.relSrv = s.rel.ingress(r.reqKey, s.relSrv[:0])
			for _, c := range s.relSrv {
				if c.service == r.service && c.instance == r.instance && s.contains(c.start, c.end, r) {
					rel = c
					n++
				}
			}
		}
		switch {
		case n > 1:
			s.kind[i] = parentAmbiguous
		case n == 1 && found >= 0:
			s.addEdge(i, found, methodRequestID)
		case n == 1:
			s.kind[i] = parentReleased
			s.method[i] = methodRequestID
			s.released[i] = releasedEdge{ok: true, traceID: rel.traceID, spanID: rel.spanID}
		}
	}
}

// sameInstanceAsOrphan reports whether r is of the service and instance of
// one of the unit's orphans (there are few).
func (s *stitcher) sameInstanceAsOrphan(r *spanRec) bool {
	for _, o := range s.orphans {
		if c := &s.recs[o]; c.service == r.service && c.instance == r.instance {
			return true
		}
	}
	return false
}

// isRequestIDOrphan: a root that lost its context (empty parent) on the way
// out of an instance. SERVER roots are where requests enter and are never
// hung under anything (a request re-entering through a gateway keeps its
// x-request-id but is a new request).
func (s *stitcher) isRequestIDOrphan(i int) bool {
	r := &s.recs[i]
	return s.kind[i] == parentNone && r.kind != ptrace.SpanKindServer && r.requestIDRuleApplies()
}

func (s *stitcher) contains(start, end pcommon.Timestamp, r *spanRec) bool {
	tol := s.opts.tolerance
	return uint64(start) <= uint64(r.start)+tol && uint64(end)+tol >= uint64(r.end)
}

// result computes trace IDs, outcomes and counters from the resolved edges.
func (s *stitcher) result() stitchResult {
	n := len(s.recs)
	var res stitchResult
	// logical tops follow every edge; physical tops stop at request-ID edges
	// in link mode, where those fragments keep their own trace ID.
	logical := s.tops(false)
	physical := logical
	if s.opts.link {
		physical = s.tops(true)
	}
	s.final = grow(s.final, n)
	changed := false
	for i := range s.recs {
		s.final[i] = s.traceOfTop(physical[i])
		changed = changed || s.final[i] != s.recs[i].traceID || s.method[i] != methodNone
	}
	if changed {
		res.traceID = slices.Clone(s.final)
		res.stitchedBy = make([]stitchMethod, n)
	}
	for i := range s.recs {
		if m := s.method[i]; m != methodNone {
			res.stitchedBy[i] = m
			res.stitches[m]++
			if m == methodRequestID {
				s.setNewParent(&res, i, physical)
			}
		}
		if s.kind[i] == parentAmbiguous {
			res.ambiguous++
		}
	}
	s.outcomes(&res, logical)
	return res
}

func (s *stitcher) setNewParent(res *stitchResult, i int, physical []int32) {
	var target spanLink
	if s.kind[i] == parentReleased {
		target = spanLink{traceID: s.released[i].traceID, spanID: s.released[i].spanID}
	} else {
		j := s.parent[i]
		target = spanLink{traceID: s.traceOfTop(physical[j]), spanID: s.recs[j].spanID}
	}
	if s.opts.link {
		if res.linkTo == nil {
			res.linkTo = map[int]spanLink{}
		}
		res.linkTo[i] = target
		return
	}
	if res.newParent == nil {
		res.newParent = map[int]pcommon.SpanID{}
	}
	res.newParent[i] = target.spanID
}

func (s *stitcher) traceOfTop(top int32) pcommon.TraceID {
	if e := s.released[top]; e.ok {
		return e.traceID
	}
	return s.recs[top].traceID
}

// tops returns the top of each record's tree, iteratively and memoized,
// in scratch memory of the stitcher (valid until the next run).
func (s *stitcher) tops(cutRequestID bool) []int32 {
	n := len(s.recs)
	buf := &s.topBuf[0]
	if cutRequestID {
		buf = &s.topBuf[1]
	}
	*buf = grow(*buf, n)
	top := *buf
	for i := range top {
		top[i] = -1
	}
	path := s.path[:0]
	defer func() { s.path = path[:0] }()
	for i := 0; i < n; i++ {
		j := int32(i)
		path = path[:0]
		for top[j] < 0 {
			p := s.parent[j]
			if p < 0 || (cutRequestID && s.method[j] == methodRequestID) {
				top[j] = j
				break
			}
			path = append(path, j)
			j = p
		}
		for _, k := range path {
			top[k] = top[j]
		}
	}
	return top
}

// outcomes classifies each logical trace: all records whose trees end in
// the same trace ID. Trees hanging under released spans are late additions
// to a trace that was already counted.
//
// A trace is disconnected when it is not one tree, or when a top of it is
// evidence of lost context (see lostContext); stitched when the processor
// made an edge in it and no evidence is left; connected otherwise. Roots
// that are legitimate entry points (a gateway's or a client pod's CLIENT
// span, any SERVER span) are not evidence.
func (s *stitcher) outcomes(res *stitchResult, logical []int32) {
	s.states = s.states[:0]
	clear(s.stateIdx)
	s.topState = grow(s.topState, len(s.recs))
	s.lostTop = grow(s.lostTop, len(s.recs))
	for i := range s.recs {
		t := logical[i]
		if s.released[t].ok {
			res.lateSpans++
			continue
		}
		k := s.stateOf(s.recs[t].traceID)
		st := &s.states[k]
		if s.method[i] != methodNone {
			st.stitched = true
		}
		if int(t) == i { // each top is met once, as itself
			s.topState[i] = int32(k)
			st.roots++
			if s.lostTop[i] = s.lostContext(i); s.lostTop[i] {
				st.lost = true
			}
		}
	}
	for k := range s.states {
		st := &s.states[k]
		st.disconnected = st.lost || st.roots > 1
		switch {
		case st.disconnected:
			res.traces = append(res.traces, outcomeDisconnected)
		case st.stitched:
			res.traces = append(res.traces, outcomeStitched)
		default:
			res.traces = append(res.traces, outcomeConnected)
		}
	}
	// Blame the service of each top that lost its context on the way out of
	// its instance: its app made the call without the request's context.
	for i := range s.recs {
		if int(logical[i]) != i || s.released[i].ok || !s.lostTop[i] {
			continue
		}
		if s.recs[i].parentID.IsEmpty() {
			res.blame = append(res.blame, s.names.name(s.recs[i].service))
		}
	}
}

// lostContext reports whether top i is evidence that a request's context
// was lost: a parent span ID that names no span to be found (missing,
// ambiguous, a cycle), or a root that is not where requests enter (not
// SERVER nor CONSUMER, not a declared entry point) made while a SERVER span
// of its own instance contained it: its app was serving a request and made
// this call without that request's context. A gateway's or a client pod's
// CLIENT root has no SERVER span around it in its instance.
func (s *stitcher) lostContext(i int) bool {
	switch s.kind[i] {
	case parentNone:
	case parentAmbiguous:
		return true // two parents qualify: the context is lost either way
	default:
		return s.kind[i] != parentInUnit && s.kind[i] != parentReleased
	}
	r := &s.recs[i]
	if r.kind == ptrace.SpanKindServer || r.kind == ptrace.SpanKindConsumer || s.opts.serving == nil || s.opts.entryPoints[r.service] {
		return false
	}
	return s.opts.serving.serving(r.instance, r.start, r.end, s.opts.tolerance)
}

// stateOf returns the index of the state of trace tid, adding it. A unit
// nearly always has one to three trace IDs: those are searched in place,
// a map takes over beyond a handful.
func (s *stitcher) stateOf(tid pcommon.TraceID) int {
	const linear = 8
	if len(s.states) <= linear {
		for k := range s.states {
			if s.states[k].traceID == tid {
				return k
			}
		}
	} else if k, ok := s.stateIdx[tid]; ok {
		return int(k)
	}
	s.states = append(s.states, traceState{traceID: tid})
	if len(s.states) > linear {
		if len(s.stateIdx) == 0 {
			for k := range s.states {
				s.stateIdx[s.states[k].traceID] = int32(k)
			}
		} else {
			s.stateIdx[tid] = int32(len(s.states) - 1)
		}
	}
	return len(s.states) - 1
}

// unionFind tracks which records are already in one tree.
type unionFind struct{ p []int32 }

func (u unionFind) find(i int) int32 {
	x := int32(i)
	for u.p[x] != x {
		u.p[x] = u.p[u.p[x]]
		x = u.p[x]
	}
	return x
}

func (u unionFind) same(i, j int) bool { return u.find(i) == u.find(j) }

// union joins the sets of i and j; false if they were already one.
func (u unionFind) union(i, j int) bool {
	a, b := u.find(i), u.find(j)
	if a == b {
		return false
	}
	u.p[a] = b
	return true
}
