package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
)

// StitchMode says how a request-ID stitch is written into the spans.
type StitchMode string

const (
	// StitchModeReparent moves the fragment into the parent's trace and sets
	// its root's parent span ID. Works with every backend, Zipkin included.
	StitchModeReparent StitchMode = "reparent"
	// StitchModeLink keeps the fragment's trace ID and adds a span link from
	// its root to the chosen parent (for backends that show links).
	StitchModeLink StitchMode = "link"
)

// Mode says what the processor does with the traces it buffers.
type Mode string

const (
	// ModeStitch stitches fragments into traces and counts outcomes.
	ModeStitch Mode = "stitch"
	// ModeKey stitches nothing: it writes on every span of a released trace
	// one key that all fragments of its request share, for a load-balancing
	// exporter to route by (see KeyAttribute).
	ModeKey Mode = "key"
)

// Config is the configuration of the tracestitch processor.
type Config struct {
	// Mode is stitch (default) or key.
	Mode Mode `mapstructure:"mode"`
	// KeyAttribute is the span attribute key mode writes.
	KeyAttribute string `mapstructure:"key_attribute"`
	// WaitDuration is the quiet period after a trace's newest span before the
	// trace is released.
	WaitDuration time.Duration `mapstructure:"wait_duration"`
	// MaxWait caps how long a trace is held after its first span.
	MaxWait time.Duration `mapstructure:"max_wait"`
	// MaxBufferedSpans bounds memory: past it the oldest traces leave early.
	MaxBufferedSpans int `mapstructure:"max_buffered_spans"`
	// OriginalTraceIDAttribute keeps the trace ID a moved span had before.
	OriginalTraceIDAttribute string `mapstructure:"original_trace_id_attribute"`
	// StitchMode is reparent (default) or link.
	StitchMode StitchMode `mapstructure:"stitch_mode"`
	// RequestID configures the x-request-id fallback.
	RequestID RequestIDConfig `mapstructure:"request_id"`
	// InstanceIdentity lists the attribute keys (span first, then resource)
	// whose first non-empty value names the workload instance of a span.
	InstanceIdentity []string `mapstructure:"instance_identity"`
	// LateSpanTTL is how long released spans stay in the index that lets late
	// fragments join their trace.
	LateSpanTTL time.Duration `mapstructure:"late_span_ttl"`
	// MaxIndexEntries bounds the index of released spans.
	MaxIndexEntries int `mapstructure:"max_index_entries"`
	// ReleaseBatchMaxSpans caps the spans of one call downstream; a trace is
	// never split, so a bigger one goes alone.
	ReleaseBatchMaxSpans int `mapstructure:"release_batch_max_spans"`
	// EntryPoints declares where requests legitimately start, beyond what
	// the outcome rule recognizes by itself.
	EntryPoints EntryPointsConfig `mapstructure:"entry_points"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// RequestIDConfig configures stitching by Envoy's x-request-id.
type RequestIDConfig struct {
	Enabled bool `mapstructure:"enabled"`
	// Attributes are tried in order; the first present one is the request ID.
	Attributes []string `mapstructure:"attributes"`
	// TimeTolerance is the slack allowed when the parent must contain the
	// orphan in time.
	TimeTolerance time.Duration `mapstructure:"time_tolerance"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// EntryPointsConfig declares legitimate roots.
type EntryPointsConfig struct {
	// Services (resource service.name) whose spans without a parent always
	// start a request: never counted as lost context, never blamed, even
	// when their instance was serving a request at the time (a job or a
	// background worker inside a serving process).
	Services []string `mapstructure:"services"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ component.Config = (*Config)(nil)

// Validate checks the configuration; every error names the offending key.
func (c *Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeStitch:
	case ModeKey:
		if c.KeyAttribute == "" {
			errs = append(errs, errors.New("key_attribute must not be empty when mode is key"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode must be %q or %q, got %q", ModeStitch, ModeKey, c.Mode))
	}
	if c.WaitDuration <= 0 {
		errs = append(errs, fmt.Errorf("wait_duration must be greater than 0, got %v", c.WaitDuration))
	}
	if c.MaxWait <= 0 {
		errs = append(errs, fmt.Errorf("max_wait must be greater than 0, got %v", c.MaxWait))
	} else if c.MaxWait < c.WaitDuration {
		errs = append(errs, fmt.Errorf("max_wait (%v) must be greater than or equal to wait_duration (%v)", c.MaxWait, c.WaitDuration))
	}
	if c.MaxBufferedSpans <= 0 {
		errs = append(errs, fmt.Errorf("max_buffered_spans must be greater than 0, got %d", c.MaxBufferedSpans))
	}
	if c.OriginalTraceIDAttribute == "" {
		errs = append(errs, errors.New("original_trace_id_attribute must not be empty"))
	}
	switch c.StitchMode {
	case StitchModeReparent, StitchModeLink:
	default:
		errs = append(errs, fmt.Errorf("stitch_mode must be %q or %q, got %q", StitchModeReparent, StitchModeLink, c.StitchMode))
	}
	if c.RequestID.Enabled && len(c.RequestID.Attributes) == 0 {
		errs = append(errs, errors.New("request_id.attributes must not be empty when request_id.enabled is true"))
	}
	for i, a := range c.RequestID.Attributes {
		if a == "" {
			errs = append(errs, fmt.Errorf("request_id.attributes[%d] must not be empty", i))
		}
	}
	if c.RequestID.TimeTolerance < 0 {
		errs = append(errs, fmt.Errorf("request_id.time_tolerance must not be negative, got %v", c.RequestID.TimeTolerance))
	}
	if len(c.InstanceIdentity) == 0 {
		errs = append(errs, errors.New("instance_identity must not be empty"))
	}
	for i, k := range c.InstanceIdentity {
		if k == "" {
			errs = append(errs, fmt.Errorf("instance_identity[%d] must not be empty", i))
		}
	}
	if c.LateSpanTTL < 0 {
		errs = append(errs, fmt.Errorf("late_span_ttl must not be negative, got %v", c.LateSpanTTL))
	}
	if c.MaxIndexEntries < 0 {
		errs = append(errs, fmt.Errorf("max_index_entries must not be negative, got %d", c.MaxIndexEntries))
	}
	if c.ReleaseBatchMaxSpans <= 0 {
		errs = append(errs, fmt.Errorf("release_batch_max_spans must be greater than 0, got %d", c.ReleaseBatchMaxSpans))
	}
	for i, svc := range c.EntryPoints.Services {
		if svc == "" {
			errs = append(errs, fmt.Errorf("entry_points.services[%d] must not be empty", i))
		}
	}
	return errors.Join(errs...)
}
