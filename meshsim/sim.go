package meshsim

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// Options of one simulation run.
type Options struct {
	Seed int64
	// Requests is the number of external requests.
	Requests int
	// Concurrency is how many requests overlap on average.
	Concurrency int
	// Rate, if > 0, starts requests at this many per second instead of
	// deriving the spacing from Concurrency.
	Rate float64
	// Start is the wall-clock time of the first request.
	Start time.Time
	// Shared: Envoy's default shared client/server span IDs and 64-bit trace
	// IDs. False is Istio's setting: distinct span IDs, 128-bit trace IDs.
	Shared bool
	// MaxSkew is the largest clock offset of a host (sidecar and app share it).
	MaxSkew time.Duration
	// RetryRate is the share of calls whose first attempt times out and is
	// retried by the app.
	RetryRate float64
	// AsyncRate is the share of calls turned into async calls that outlive
	// their request.
	AsyncRate float64
	// FlushInterval: every reporter (a pod's sidecar, an app's SDK) sends
	// the spans that finished since its last flush, in finish order.
	FlushInterval time.Duration
	// ReportDelay is the largest network delay of one flush.
	ReportDelay time.Duration
	// LateRate is the share of flushes that arrive LateDelay late (a slow
	// or retried export): late fragments, seconds after their trace.
	LateRate  float64
	LateDelay time.Duration
	// App128 makes OTel apps under a 64-bit Envoy trace use 128-bit trace IDs
	// with the same low 64 bits (the 64/128-bit mix).
	App128 bool
	// DisconnectRate is the share of calls whose caller disconnects before
	// the answer (response_flags DC): the SERVER span outlives its CLIENT.
	DisconnectRate float64
}

// DefaultOptions are a small run shaped like Istio: distinct client and
// server span IDs, 128-bit trace IDs, pods of one cluster (no clock skew).
func DefaultOptions() Options {
	return Options{
		Seed:           1,
		Requests:       100,
		Concurrency:    8,
		Start:          time.Unix(1_764_010_000, 0),
		RetryRate:      0.05,
		DisconnectRate: 0.01,
		FlushInterval:  200 * time.Millisecond,
		ReportDelay:    300 * time.Millisecond,
	}
}

// Source says how a span reaches the collector.
type Source string

const (
	SourceEnvoy Source = "envoy" // Zipkin v2 JSON
	SourceOTel  Source = "otel"  // OTLP
)

// Span is one generated span with its ground truth.
type Span struct {
	TraceID  [16]byte
	Trace64  bool // 64-bit trace ID (upper half zero)
	ID       uint64
	ParentID uint64
	Kind     string // SERVER, CLIENT
	Shared   bool
	Name     string
	// Service is Envoy's service cluster ("app.namespace") or the app's
	// service.name.
	Service string
	Pod     string
	IP      string
	Start   time.Time
	End     time.Time
	Tags    map[string]string
	Source  Source
	// Arrival is when the span reaches the collector.
	Arrival time.Time
	// Annotation is the time of the span's one annotation (cr or ss),
	// stamped a little after it ended; zero for app spans.
	Annotation time.Time

	// ground truth
	Key        string // unique: span ID and kind
	TrueParent string // Key of the true parent, "" for the request's root
	Request    int
	// Fragment: the span starts a new trace ID although it has a true parent.
	Fragment bool
	// Recoverable: a fragment root a correct stitcher can and must reattach
	// (same request ID, same instance, contained in time, unique).
	Recoverable bool
	// Unseen: an unrecoverable fragment root that no SERVER span of its
	// instance contains (a call outliving its request): the outcome rule
	// cannot tell it from a request that starts there.
	Unseen bool
}

// TraceIDHex is the trace ID as the wire shows it (16 hex for 64-bit IDs).
func (s *Span) TraceIDHex() string {
	if s.Trace64 {
		return hex.EncodeToString(s.TraceID[8:])
	}
	return hex.EncodeToString(s.TraceID[:])
}

// Trace32 is the trace ID as pdata prints it (always 32 hex).
func (s *Span) Trace32() string { return hex.EncodeToString(s.TraceID[:]) }

// IDHex is the span ID in hex.
func (s *Span) IDHex() string { return fmt.Sprintf("%016x", s.ID) }

// ParentHex is the parent span ID in hex, "" for none.
func (s *Span) ParentHex() string {
	if s.ParentID == 0 {
		return ""
	}
	return fmt.Sprintf("%016x", s.ParentID)
}

// Result of a run.
type Result struct {
	Spans []*Span // in arrival order
}

type instance struct {
	svc  *Service
	pod  string
	ip   string
	skew time.Duration
	node string
}

// ctxIn is what a request carries into a service.
type ctxIn struct {
	traceID [16]byte
	trace64 bool
	client  *Span // the caller's span; nil for the entry
	reqID   string
	request int
	// url is the request's http.url, userAgent what the caller sent.
	url, userAgent string
}

type sim struct {
	topo  *Topology
	opts  Options
	rng   *rand.Rand
	inst  map[string][]*instance
	spans []*Span
	used  map[uint64]bool
}

const (
	browserUA  = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.93 Safari/537.36"
	appUA      = "Go-http-client/1.1"
	port       = "9080"
	externalIP = "192.168.49.1"
	gatewayURL = "http://192.168.49.2:31653"
)

// Run generates the spans of opts.Requests requests through topo.
func Run(topo *Topology, opts Options) *Result {
	s := &sim{
		topo: topo,
		opts: opts,
		rng:  rand.New(rand.NewPCG(uint64(opts.Seed), 0x7ace57)),
		inst: map[string][]*instance{},
		used: map[uint64]bool{},
	}
	ipN := 2
	for _, svc := range topo.Services {
		for r := 0; r < svc.Replicas; r++ {
			ipN++
			in := &instance{
				svc: svc,
				pod: fmt.Sprintf("%s-v1-%04x", svc.Name, s.rng.Uint32()&0xffff),
				ip:  fmt.Sprintf("10.0.%d.%d", ipN/250, ipN%250+1),
			}
			if opts.MaxSkew > 0 {
				in.skew = s.us(-opts.MaxSkew.Microseconds(), opts.MaxSkew.Microseconds())
			}
			role := "sidecar"
			if svc.Edge == EdgeIstioGateway {
				role = "router"
			}
			in.node = fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", role, in.ip, in.pod, svc.Namespace, svc.Namespace)
			s.inst[svc.Name] = append(s.inst[svc.Name], in)
		}
	}
	conc := max(opts.Concurrency, 1)
	// A request through the default topology takes ~60ms; spacing starts by
	// that over the concurrency keeps ~conc requests in flight.
	gap := 60 * time.Millisecond / time.Duration(conc)
	if opts.Rate > 0 {
		gap = time.Duration(float64(time.Second) / opts.Rate)
	}
	gap = gap.Truncate(time.Microsecond) // Zipkin times are whole µs
	for r := 0; r < opts.Requests; r++ {
		s.enter(r, opts.Start.Add(time.Duration(r)*gap))
	}
	s.markRecoverable()
	s.arrivals()
	return &Result{Spans: s.spans}
}

func (s *sim) newSpanID() uint64 {
	for {
		id := s.rng.Uint64()
		if id != 0 && !s.used[id] {
			s.used[id] = true
			return id
		}
	}
}

// traceFor is the trace ID an Envoy starting a trace with root span id
// makes: the span ID itself (64-bit), or a random high half and the span ID
// as the low half (128-bit, Istio).
func (s *sim) traceFor(id uint64) ([16]byte, bool) {
	var t [16]byte
	binary.BigEndian.PutUint64(t[8:], id)
	if s.opts.Shared {
		return t, true
	}
	binary.BigEndian.PutUint64(t[:8], s.rng.Uint64()|1)
	return t, false
}

// newRequestID is a request ID as Envoy makes it: a UUID whose character
// 14 is Envoy's trace reason, 9 (sampled).
func (s *sim) newRequestID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s.rng.Uint64())
	binary.BigEndian.PutUint64(b[8:], s.rng.Uint64())
	b[6] = b[6]&0x0f | 0x90
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// traceReason rewrites character 14 as a sidecar that starts a new trace
// may do (Envoy keeps its trace decision there: sampled, forced, client).
func (s *sim) traceReason(rid string) string {
	if len(rid) != 36 {
		return rid
	}
	reasons := "9ab"
	return rid[:14] + string(reasons[s.rng.IntN(len(reasons))]) + rid[15:]
}

func (s *sim) pick(name string) *instance {
	list := s.inst[name]
	return list[s.rng.IntN(len(list))]
}

// us is a random whole number of microseconds in [lo, hi].
func (s *sim) us(lo, hi int64) time.Duration {
	return time.Duration(lo+s.rng.Int64N(hi-lo+1)) * time.Microsecond
}

// ms is n ms of work plus up to half a millisecond.
func (s *sim) ms(n int) time.Duration {
	return time.Duration(n)*time.Millisecond + s.us(0, 500)
}

// hop is the time from a CLIENT span's start to its SERVER span's start
// (129–2890µs in the captures, median ~250µs).
func (s *sim) hop() time.Duration {
	if s.rng.IntN(20) == 0 {
		return s.us(600, 2890)
	}
	return s.us(130, 400)
}

// tail is the time from a SERVER span's end to its CLIENT span's end.
func (s *sim) tail() time.Duration { return s.us(194, 1500) }

func fqdn(svc *Service) string { return svc.Name + "." + svc.Namespace + ".svc.cluster.local" }

// route is the route decorator Istio names spans after.
func route(svc *Service, path string) string {
	if path == "" {
		return fqdn(svc) + ":" + port + "/*"
	}
	return fqdn(svc) + ":" + port + path
}

// enter sends request r into the mesh through the entry service's edge.
func (s *sim) enter(r int, start time.Time) {
	edge := s.topo.service(s.topo.Entry)
	in := ctxIn{reqID: s.newRequestID(), request: r, userAgent: browserUA}
	if edge.Edge == EdgeService {
		in.url = gatewayURL + "/"
		in.traceID, in.trace64 = s.traceFor(s.newSpanID())
		s.serve(edge, in, start)
		return
	}
	call := edge.route(r)
	callee := s.topo.service(call.Service)
	inst := s.pick(edge.Name)
	in.url = gatewayURL + call.Path
	id := s.newSpanID()
	in.traceID, in.trace64 = s.traceFor(id)
	if edge.Edge == EdgeOTelIngress {
		// the OTel tracer's root ID is unrelated to its trace ID
		id = s.newSpanID()
	}
	root := &Span{
		TraceID: in.traceID, Trace64: in.trace64, ID: id, Request: r,
		Service: edge.Name + "." + edge.Namespace, Source: SourceEnvoy,
	}
	switch edge.Edge {
	case EdgeIstioGateway, EdgeClientPod:
		root.Kind, root.Name = "CLIENT", route(callee, call.Path)
		if edge.Edge == EdgeClientPod {
			root.Name = callee.Name + ":" + port + "/*"
			in.url = "http://" + callee.Name + ":" + port + call.Path
			in.userAgent = "curl/7.79.1"
		}
		s.envoyTags(root, inst, in, externalIP, "outbound|"+port+"||"+fqdn(callee), start)
		if edge.Edge == EdgeClientPod {
			root.Tags["peer.address"] = inst.ip
		}
		s.upstream(root, inst, callee, in, start)
	case EdgeFrontProxy:
		root.Kind, root.Name = "SERVER", "tracing.example.com"
		s.envoyTags(root, inst, in, externalIP, "serving/"+callee.Name, start)
		root.Tags["node_id"] = "3scale-kourier-gateway"
		s.upstream(root, inst, callee, in, start)
	case EdgeOTelIngress:
		root.Kind, root.Name = "SERVER", "ingress"
		s.envoyTags(root, inst, in, externalIP, callee.Name, start)
		root.Tags["node_id"] = ""
		s.add(root, inst)
		// the router's upstream span: no request ID, no node_id, the
		// upstream as peer
		up := &Span{
			TraceID: in.traceID, Trace64: in.trace64, ID: s.newSpanID(), ParentID: root.ID, TrueParent: root.Key,
			Kind: "CLIENT", Request: r, Service: root.Service, Source: SourceEnvoy,
			Name: "router " + callee.Name + " egress",
		}
		upStart := start.Add(s.us(50, 200))
		s.envoyTags(up, inst, in, s.inst[callee.Name][0].ip, callee.Name, upStart)
		for _, k := range []string{"guid:x-request-id", "node_id", "http.url", "http.method", "user_agent"} {
			delete(up.Tags, k)
		}
		up.Tags["upstream_address"] = s.inst[callee.Name][0].ip + ":" + port
		end := s.upstream(up, inst, callee, in, upStart)
		s.finish(root, inst, end.Add(s.us(20, 200)))
	}
}

// upstream reports an edge's span that started at start, hands the request
// to callee under it and ends the span after the answer; it returns when.
func (s *sim) upstream(sp *Span, inst *instance, callee *Service, in ctxIn, start time.Time) time.Time {
	s.add(sp, inst)
	in.client = sp
	_, end := s.serve(callee, in, start.Add(s.hop()))
	end = end.Add(s.tail())
	s.finish(sp, inst, end)
	return end
}

// finish sets a span's end (true time) and its annotation.
func (s *sim) finish(sp *Span, inst *instance, end time.Time) {
	sp.End = end.Add(inst.skew)
	if sp.Source == SourceEnvoy {
		sp.Annotation = sp.End.Add(s.us(25, 178))
	}
}

// serve simulates one request arriving at svc; returns its ingress span
// and when that ends (true time).
func (s *sim) serve(svc *Service, in ctxIn, start time.Time) (*Span, time.Time) {
	inst := s.pick(svc.Name)
	srv := &Span{
		TraceID: in.traceID, Trace64: in.trace64, Kind: "SERVER", Request: in.request,
		Service: svc.Name + "." + svc.Namespace, Source: SourceEnvoy,
		Name: route(svc, ""),
	}
	peer := externalIP
	switch {
	case in.client == nil:
		// Envoy's root span ID is the trace ID's low 64 bits.
		srv.ID = binary.BigEndian.Uint64(in.traceID[8:])
		s.used[srv.ID] = true
	case s.opts.Shared && in.client.Kind == "CLIENT":
		srv.ID, srv.ParentID, srv.Shared = in.client.ID, in.client.ParentID, true
		srv.TrueParent = in.client.Key
		peer = in.client.IP
	default:
		srv.ID, srv.ParentID = s.newSpanID(), in.client.ID
		srv.TrueParent = in.client.Key
		peer = in.client.IP
	}
	if in.client != nil {
		// a CLIENT span and its SERVER child have the same name
		srv.Name = in.client.Name
		if in.client.Kind != "CLIENT" || strings.HasPrefix(in.client.Name, "router ") {
			srv.Name = route(svc, "")
		}
	}
	s.envoyTags(srv, inst, in, peer, "inbound|"+port+"||", start)
	s.add(srv, inst)

	t := start.Add(s.us(20, 300))
	// The app's own spans, if it reports any: a SERVER span under the
	// ingress, and a CLIENT span per outgoing call.
	app := s.appServer(svc, inst, srv, in, t)
	parentOf := func() *Span {
		if app != nil {
			return app
		}
		return srv
	}
	end := t.Add(s.ms(svc.WorkMS))
	callStart := end
	last := end
	for i, c := range svc.Calls {
		if !c.Parallel || i == 0 {
			callStart = last
		}
		async := c.Async || (s.opts.AsyncRate > 0 && s.rng.Float64() < s.opts.AsyncRate)
		if async {
			// fired early, and keeps going after the response was sent
			callStart = start.Add(s.ms(1))
		}
		cEnd := s.call(svc, inst, in, parentOf(), c, callStart, async)
		if !async && cEnd.After(last) {
			last = cEnd
		}
	}
	end = last.Add(s.us(100, 1000))
	if app != nil {
		app.End = end.Add(inst.skew)
		end = end.Add(s.us(20, 300))
	}
	s.finish(srv, inst, end)
	return srv, end
}

func (s *sim) appServer(svc *Service, inst *instance, srv *Span, in ctxIn, t time.Time) *Span {
	if !svc.OTelApp || svc.Propagation != PropagationFull {
		return nil
	}
	app := &Span{
		TraceID: in.traceID, Trace64: in.trace64, Kind: "SERVER", Request: in.request,
		ID: s.newSpanID(), ParentID: srv.ID, TrueParent: srv.Key,
		Service: svc.Name, Pod: inst.pod, Source: SourceOTel, Name: "GET /" + svc.Name,
		Start: t.Add(inst.skew),
		Tags:  map[string]string{"http.request.header.x-request-id": in.reqID},
	}
	if s.opts.App128 && in.trace64 {
		// The app keeps the low 64 bits and makes up the high half.
		binary.BigEndian.PutUint64(app.TraceID[:8], s.rng.Uint64()|1)
		app.Trace64 = false
		app.Fragment = true // joined to the ingress by parent ID only
	}
	s.add(app, inst)
	return app
}

// call makes one outgoing call (with an app-level retry sometimes) and
// returns when the caller got its answer.
func (s *sim) call(svc *Service, inst *instance, in ctxIn, parent *Span, c Call, start time.Time, async bool) time.Time {
	attempts := 1
	if s.opts.RetryRate > 0 && s.rng.Float64() < s.opts.RetryRate {
		attempts = 2
	}
	t := start
	for a := 0; a < attempts; a++ {
		failed := a < attempts-1
		t = s.attempt(svc, inst, in, parent, c, t, failed, async)
	}
	return t
}

func (s *sim) attempt(svc *Service, inst *instance, in ctxIn, parent *Span, c Call, start time.Time, failed, async bool) time.Time {
	callee := s.topo.service(c.Service)
	traceID, trace64 := in.traceID, in.trace64
	if parent.Source == SourceOTel {
		traceID, trace64 = parent.TraceID, parent.Trace64
	}
	var appClient *Span
	if parent.Source == SourceOTel {
		appClient = &Span{
			TraceID: traceID, Trace64: trace64, Kind: "CLIENT", Request: in.request,
			ID: s.newSpanID(), ParentID: parent.ID, TrueParent: parent.Key,
			Service: svc.Name, Pod: inst.pod, Source: SourceOTel, Name: "GET " + c.Service,
			Start: start.Add(inst.skew),
			Tags:  map[string]string{"http.request.header.x-request-id": in.reqID},
		}
		s.add(appClient, inst)
		parent = appClient
	}
	eg := &Span{
		Kind: "CLIENT", Request: in.request, ID: s.newSpanID(), TrueParent: parent.Key,
		Service: svc.Name + "." + svc.Namespace, Source: SourceEnvoy,
		Name: route(callee, c.Path),
	}
	out := ctxIn{reqID: in.reqID, request: in.request, userAgent: in.userAgent,
		url: "http://" + callee.Name + ":" + port + "/" + callee.Name + "/" + fmt.Sprint(in.request%7)}
	switch svc.Propagation {
	case PropagationFull:
		eg.TraceID, eg.Trace64, eg.ParentID = traceID, trace64, parent.ID
	case PropagationRequestIDOnly:
		// the egress sidecar starts a new trace, rooted at its span
		eg.TraceID, eg.Trace64 = s.traceFor(eg.ID)
		eg.Fragment = true
		out.reqID = s.traceReason(in.reqID)
	case PropagationNone:
		eg.TraceID, eg.Trace64 = s.traceFor(eg.ID)
		eg.Fragment = true
		out.reqID = s.newRequestID()
		out.userAgent = appUA
	}
	out.traceID, out.trace64, out.client = eg.TraceID, eg.Trace64, eg
	t := start.Add(s.us(20, 300))
	s.envoyTags(eg, inst, out, inst.ip, "outbound|"+port+"||"+fqdn(callee), t)
	s.add(eg, inst)
	srv, calleeEnd := s.serve(callee, out, t.Add(s.hop()))
	end := calleeEnd.Add(s.tail())
	if failed {
		eg.Tags["response_flags"] = "UT"
		eg.Tags["http.status_code"] = "504"
	}
	if async {
		end = end.Add(s.ms(40)) // outlives the request that fired it
	} else if s.opts.DisconnectRate > 0 && s.rng.Float64() < s.opts.DisconnectRate {
		// the caller gave up: its span ends before the callee's
		end = calleeEnd.Add(-s.us(300, 900))
		s.disconnected(eg)
		s.disconnected(srv)
	}
	s.finish(eg, inst, end)
	if appClient != nil {
		end = end.Add(s.us(20, 300))
		appClient.End = end.Add(inst.skew)
	}
	return end
}

// disconnected marks a span of a call the downstream gave up on.
func (s *sim) disconnected(sp *Span) {
	if sp.Source != SourceEnvoy {
		return
	}
	sp.Tags["response_flags"] = "DC"
	sp.Tags["http.status_code"] = "0"
	sp.Tags["response_size"] = "0"
	sp.Tags["error"] = "true"
}

// envoyTags sets the start and the Istio tag set of an Envoy span; peer is
// the downstream address the Envoy saw.
func (s *sim) envoyTags(sp *Span, inst *instance, in ctxIn, peer, cluster string, start time.Time) {
	sp.Start = start.Add(inst.skew)
	rev := "latest"
	if inst.svc.Edge == EdgeService {
		rev = "v1"
	}
	sp.Tags = map[string]string{
		"component":                "proxy",
		"node_id":                  inst.node,
		"guid:x-request-id":        in.reqID,
		"http.method":              "GET",
		"http.url":                 in.url,
		"http.protocol":            "HTTP/1.1",
		"http.status_code":         "200",
		"request_size":             "0",
		"response_size":            fmt.Sprint(48 + s.rng.IntN(5000)),
		"response_flags":           "-",
		"downstream_cluster":       "-",
		"upstream_cluster":         cluster,
		"upstream_cluster.name":    cluster,
		"peer.address":             peer,
		"user_agent":               in.userAgent,
		"istio.canonical_service":  inst.svc.Name,
		"istio.canonical_revision": rev,
		"istio.mesh_id":            "cluster.local",
		"istio.namespace":          inst.svc.Namespace,
	}
}

func (s *sim) add(sp *Span, inst *instance) {
	sp.IP = inst.ip
	if sp.Pod == "" {
		sp.Pod = inst.pod
	}
	sp.Key = fmt.Sprintf("%016x/%s", sp.ID, sp.Kind)
	s.spans = append(s.spans, sp)
}

// markRecoverable applies the ground-truth rule for fragment roots: the
// true parent is an ingress span of the same instance; the fragment is
// recoverable when that ingress is the only ingress span of the instance
// with the same request ID (character 14 masked) that contains it in time.
func (s *sim) markRecoverable() {
	type key struct{ node, rid string }
	ingress := map[key][]*Span{}
	byKey := map[string]*Span{}
	servers := map[string][]*Span{}
	for _, sp := range s.spans {
		byKey[sp.Key] = sp
		if sp.Kind == "SERVER" {
			servers[sp.instance()] = append(servers[sp.instance()], sp)
		}
		if sp.Kind == "SERVER" && sp.Source == SourceEnvoy {
			k := key{sp.Tags["node_id"], maskRequestID(sp.Tags["guid:x-request-id"])}
			ingress[k] = append(ingress[k], sp)
		}
	}
	contained := func(sp, c *Span) bool { return !c.Start.After(sp.Start) && !c.End.Before(sp.End) }
	for _, sp := range s.spans {
		if !sp.Fragment {
			continue
		}
		if sp.ParentID != 0 {
			sp.Recoverable = true // its parent span ID is intact
			continue
		}
		parent := byKey[sp.TrueParent]
		k := key{sp.Tags["node_id"], maskRequestID(sp.Tags["guid:x-request-id"])}
		n := 0
		var only *Span
		for _, c := range ingress[k] {
			if contained(sp, c) {
				n++
				only = c
			}
		}
		sp.Recoverable = n == 1 && only == parent
		if !sp.Recoverable {
			sp.Unseen = !slices.ContainsFunc(servers[sp.instance()], func(c *Span) bool { return contained(sp, c) })
		}
	}
}

func maskRequestID(r string) string {
	if len(r) == 36 && r[8] == '-' && r[13] == '-' {
		return strings.ToLower(r[:14] + "*" + r[15:])
	}
	return r
}

// arrivals sets arrival times: each reporter (pod sidecar or app SDK)
// flushes what finished since its last flush, every FlushInterval, with a
// network delay per flush; some flushes are late. Spans are then sorted by
// arrival.
func (s *sim) arrivals() {
	type reporter struct {
		pod    string
		source Source
	}
	type flush struct {
		r    reporter
		tick int64
	}
	phase := map[reporter]time.Duration{}
	delay := map[flush]time.Duration{}
	interval := s.opts.FlushInterval
	for _, sp := range s.spans {
		if interval <= 0 {
			sp.Arrival = sp.End
			continue
		}
		r := reporter{sp.Pod, sp.Source}
		ph, ok := phase[r]
		if !ok {
			ph = time.Duration(s.rng.Int64N(int64(interval)))
			phase[r] = ph
		}
		end := sp.End.Sub(s.opts.Start) - ph
		tick := int64(end/interval) + 1
		f := flush{r, tick}
		d, ok := delay[f]
		if !ok {
			if s.opts.ReportDelay > 0 {
				d = time.Duration(s.rng.Int64N(int64(s.opts.ReportDelay)))
			}
			if s.opts.LateRate > 0 && s.rng.Float64() < s.opts.LateRate {
				d += s.opts.LateDelay
			}
			delay[f] = d
		}
		sp.Arrival = s.opts.Start.Add(ph + time.Duration(tick)*interval + d)
	}
	sort.SliceStable(s.spans, func(i, j int) bool { return s.spans[i].Arrival.Before(s.spans[j].Arrival) })
}
