// Package meshsim generates the spans an Envoy service mesh sends to a
// collector — Envoy Zipkin spans per sidecar hop plus OTel SDK app spans —
// with configurable propagation failures, concurrency, retries, clock skew
// and arrival disorder, and writes the ground truth (the true parent of every
// span) next to them.
package meshsim

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// Propagation is what an app forwards from its incoming request to its
// outgoing calls.
type Propagation string

const (
	// PropagationFull forwards the trace headers and x-request-id.
	PropagationFull Propagation = "full"
	// PropagationRequestIDOnly forwards x-request-id only: the egress
	// sidecar starts a new trace.
	PropagationRequestIDOnly Propagation = "request_id_only"
	// PropagationNone forwards nothing: new trace, new request ID.
	PropagationNone Propagation = "none"
)

// Edge is how requests enter the mesh: what the entry service reports.
type Edge string

const (
	// EdgeIstioGateway is the Istio ingress gateway: one CLIENT span per
	// request (node_id router~…), no SERVER span, one upstream call.
	EdgeIstioGateway Edge = "istio-gateway"
	// EdgeClientPod is a client pod (a job, curl in a sleep pod): its
	// sidecar's CLIENT span starts the trace.
	EdgeClientPod Edge = "client-pod"
	// EdgeFrontProxy is a Kourier gateway or a plain Envoy front proxy: one
	// SERVER root span per request, no CLIENT span; the upstream's SERVER
	// span is its child.
	EdgeFrontProxy Edge = "front-proxy"
	// EdgeOTelIngress is Envoy's OpenTelemetry tracer with upstream spans:
	// an "ingress" SERVER root, then a "router <cluster> egress" CLIENT
	// span (no request ID, no node_id), then the upstream's SERVER span.
	EdgeOTelIngress Edge = "otel-ingress"
	// EdgeService: the entry is an ordinary meshed service, whose ingress
	// SERVER span is the root.
	EdgeService Edge = "service"
)

// Topology is the mesh: services, their replicas and calls.
type Topology struct {
	// Entry is the service that receives the external requests.
	Entry    string     `yaml:"entry"`
	Services []*Service `yaml:"services"`
}

// Service is one workload with an ingress and an egress sidecar per replica.
type Service struct {
	Name string `yaml:"name"`
	// Edge is set on the entry service only (default service); an edge
	// other than service sends each request to one of its calls, in turn.
	Edge        Edge        `yaml:"edge"`
	Namespace   string      `yaml:"namespace"`
	Replicas    int         `yaml:"replicas"`
	Propagation Propagation `yaml:"propagation"`
	// OTelApp: the app itself reports spans with an OTel SDK (only when it
	// forwards the trace headers: an instrumented app propagates).
	OTelApp bool `yaml:"otel_app"`
	// WorkMS is the app's own work per request, in ms.
	WorkMS int `yaml:"work_ms"`
	// Calls are made in order; a call with Parallel runs alongside the
	// previous one.
	Calls []Call `yaml:"calls"`
}

// Call is one outgoing call of a service.
type Call struct {
	Service  string `yaml:"service"`
	Parallel bool   `yaml:"parallel"`
	// Async: the call is fired near the end of the request and outlives it.
	Async bool `yaml:"async"`
	// Path is the request path (the gateway route's for an edge's calls).
	Path string `yaml:"path"`
	// Weight is an edge call's share of the requests (default 1).
	Weight int `yaml:"weight"`
}

// DefaultTopologyYAML is a mesh behind an Istio ingress gateway: bookinfo
// plus a deeper shop chain with a fan-out. Most apps propagate the trace
// headers; reviews forwards only x-request-id and ledger forwards nothing,
// the two ways real apps break traces.
const DefaultTopologyYAML = `
entry: istio-ingressgateway
services:
  - name: istio-ingressgateway
    namespace: istio-system
    edge: istio-gateway
    replicas: 1
    calls:
      - service: productpage
        path: /productpage
        weight: 3
      - service: orders
        path: /api/orders
  - name: productpage
    namespace: default
    replicas: 2
    propagation: full
    work_ms: 5
    calls:
      - service: details
      - service: reviews
  - name: details
    namespace: default
    replicas: 1
    propagation: full
    work_ms: 3
  - name: reviews
    namespace: default
    replicas: 3
    propagation: request_id_only
    work_ms: 4
    calls:
      - service: ratings
  - name: ratings
    namespace: default
    replicas: 1
    propagation: full
    otel_app: true
    work_ms: 2
  - name: orders
    namespace: shop
    replicas: 2
    propagation: full
    otel_app: true
    work_ms: 2
    calls:
      - service: payments
  - name: payments
    namespace: shop
    replicas: 1
    propagation: full
    work_ms: 2
    calls:
      - service: ledger
  - name: ledger
    namespace: shop
    replicas: 1
    propagation: none
    work_ms: 2
    calls:
      - service: fanout
  - name: fanout
    namespace: shop
    replicas: 1
    propagation: full
    work_ms: 1
    calls:
      - service: inventory
      - service: inventory
      - service: pricing
  - name: inventory
    namespace: shop
    replicas: 1
    propagation: full
    work_ms: 2
    calls:
      - service: stock
  - name: stock
    namespace: shop
    replicas: 2
    propagation: full
    work_ms: 1
  - name: pricing
    namespace: shop
    replicas: 1
    propagation: full
    work_ms: 1
`

// ParseTopology reads and checks a topology.
func ParseTopology(b []byte) (*Topology, error) {
	var t Topology
	if err := yaml.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	return &t, t.Validate()
}

// LoadTopology reads a topology file; "" gives the default topology.
func LoadTopology(path string) (*Topology, error) {
	if path == "" {
		return ParseTopology([]byte(DefaultTopologyYAML))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTopology(b)
}

func (t *Topology) service(name string) *Service {
	for _, s := range t.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Validate checks the topology and fills defaults.
func (t *Topology) Validate() error {
	if t.service(t.Entry) == nil {
		return fmt.Errorf("topology: entry service %q is not defined", t.Entry)
	}
	for _, s := range t.Services {
		if s.Replicas <= 0 {
			s.Replicas = 1
		}
		if s.Namespace == "" {
			s.Namespace = "default"
		}
		switch s.Edge {
		case "":
			s.Edge = EdgeService
		case EdgeService:
		case EdgeIstioGateway, EdgeClientPod, EdgeFrontProxy, EdgeOTelIngress:
			if s.Name != t.Entry {
				return fmt.Errorf("topology: service %q: only the entry service can be an edge (%s)", s.Name, s.Edge)
			}
			if len(s.Calls) == 0 {
				return fmt.Errorf("topology: edge %q calls no service", s.Name)
			}
		default:
			return fmt.Errorf("topology: service %q: unknown edge %q", s.Name, s.Edge)
		}
		switch s.Propagation {
		case "":
			s.Propagation = PropagationFull
		case PropagationFull, PropagationRequestIDOnly, PropagationNone:
		default:
			return fmt.Errorf("topology: service %q: unknown propagation %q", s.Name, s.Propagation)
		}
		for i := range s.Calls {
			c := &s.Calls[i]
			if c.Weight < 0 {
				return fmt.Errorf("topology: service %q: negative weight of call to %q", s.Name, c.Service)
			}
			if c.Weight == 0 {
				c.Weight = 1
			}
			if t.service(c.Service) == nil {
				return fmt.Errorf("topology: service %q calls undefined service %q", s.Name, c.Service)
			}
		}
	}
	return t.checkAcyclic()
}

func (t *Topology) checkAcyclic() error {
	state := map[string]int{}
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("topology: call cycle through %q", n)
		case 2:
			return nil
		}
		state[n] = 1
		for _, c := range t.service(n).Calls {
			if err := visit(c.Service); err != nil {
				return err
			}
		}
		state[n] = 2
		return nil
	}
	return visit(t.Entry)
}

// route is the call an edge sends request r to: its calls in turn, each
// as many times as its weight.
func (s *Service) route(r int) Call {
	total := 0
	for _, c := range s.Calls {
		total += max(c.Weight, 1)
	}
	r %= total
	for _, c := range s.Calls {
		if r < max(c.Weight, 1) {
			return c
		}
		r -= max(c.Weight, 1)
	}
	return s.Calls[len(s.Calls)-1]
}

// SetEdge makes the entry service the given edge (used by scenario
// matrices).
func (t *Topology) SetEdge(e Edge) {
	t.service(t.Entry).Edge = e
}

// SetPropagation overrides the propagation of every service but the entry
// (used by scenario matrices).
func (t *Topology) SetPropagation(p Propagation) {
	for _, s := range t.Services {
		if s.Name != t.Entry {
			s.Propagation = p
		}
	}
}
