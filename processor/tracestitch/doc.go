//go:generate go tool -modfile=../../tools/mdatagen/go.mod mdatagen metadata.yaml

// Package tracestitch is an OpenTelemetry Collector processor that buffers
// spans per trace, stitches the fragments of a trace broken by a service
// mesh back into one tree (by parent span ID, then by Envoy's x-request-id),
// and counts the traces it leaves disconnected.
package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"
