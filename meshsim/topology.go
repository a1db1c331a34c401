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

// Topology is the mesh: services, their replicas and calls.
type Topology struct {
	// Entry is the service that receives the external requests.
	Entry    string     `yaml:"entry"`
	Services []*Service `yaml:"services"`
}

// Service is one workload with an ingress and an egress sidecar per replica.
type Service struct {
	Name        string      `yaml:"name"`
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
}

// DefaultTopologyYAML is bookinfo plus a deeper chain and a fan-out service.
const DefaultTopologyYAML = `
entry: gateway
services:
  - name: gateway
    namespace: istio-system
    replicas: 1
    propagation: full
    work_ms: 1
    calls:
      - service: productpage
      - service: orders
  - name: productpage
    namespace: default
    replicas: 2
    propagation: request_id_only
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
    otel_app: false
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
    propagation: request_id_only
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
        parallel: true
      - service: pricing
        parallel: true
  - name: inventory
    namespace: shop
    replicas: 1
    propagation: request_id_only
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
		switch s.Propagation {
		case "":
			s.Propagation = PropagationFull
		case PropagationFull, PropagationRequestIDOnly, PropagationNone:
		default:
			return fmt.Errorf("topology: service %q: unknown propagation %q", s.Name, s.Propagation)
		}
		for _, c := range s.Calls {
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

// SetPropagation overrides the propagation of every service but the entry
// (used by scenario matrices).
func (t *Topology) SetPropagation(p Propagation) {
	for _, s := range t.Services {
		if s.Name != t.Entry {
			s.Propagation = p
		}
	}
}
