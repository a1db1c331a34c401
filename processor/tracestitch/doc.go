//go:generate go tool -modfile=../../tools/mdatagen/go.mod mdatagen metadata.yaml

// Package tracestitch is an OpenTelemetry Collector processor that buffers
// spans per trace, stitches the fragments of a trace broken by a service
// mesh back into one tree (by parent span ID, then by Envoy's x-request-id),
// and counts the traces it leaves disconnected.
//
// The data path is drawn on tracestitchProcessor (processor.go); each file
// holds one stage of it or one structure a stage uses.
package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"
