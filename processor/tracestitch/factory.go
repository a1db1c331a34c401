package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/processor"

	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadata"
)

const (
	defaultWaitDuration     = 5 * time.Second
	defaultMaxWait          = 60 * time.Second
	defaultMaxBufferedSpans = 500_000
	defaultOriginalTraceID  = "tracestitch.original_trace_id"
	defaultKeyAttribute     = "tracestitch.stitch_key"
	defaultLateSpanTTL      = 60 * time.Second
	defaultMaxIndexEntries  = 1_000_000
	// the batch processor's default send_batch_size
	defaultReleaseBatchMaxSpans = 1024
)

// NewFactory returns the factory of the tracestitch processor.
func NewFactory() processor.Factory {
	return processor.NewFactory(
		metadata.Type,
		createDefaultConfig,
		processor.WithTraces(createTracesProcessor, metadata.TracesStability),
	)
}

func createDefaultConfig() component.Config {
	return &Config{
		Mode:                     ModeStitch,
		KeyAttribute:             defaultKeyAttribute,
		WaitDuration:             defaultWaitDuration,
		MaxWait:                  defaultMaxWait,
		MaxBufferedSpans:         defaultMaxBufferedSpans,
		OriginalTraceIDAttribute: defaultOriginalTraceID,
		StitchMode:               StitchModeReparent,
		RequestID: RequestIDConfig{
			Enabled:    true,
			Attributes: []string{"guid:x-request-id", "guid.x-request-id", "http.request.header.x-request-id", "x-request-id"},
		},
		InstanceIdentity: []string{"node_id", "k8s.pod.name", "service.instance.id", "host.name", "service.name"},
		LateSpanTTL:      defaultLateSpanTTL,
		MaxIndexEntries:  defaultMaxIndexEntries,

		ReleaseBatchMaxSpans: defaultReleaseBatchMaxSpans,
	}
}

func createTracesProcessor(
	_ context.Context,
	set processor.Settings,
	cfg component.Config,
	next consumer.Traces,
) (processor.Traces, error) {
	return newProcessor(set, cfg.(*Config), next)
}
