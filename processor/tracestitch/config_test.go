package tracestitch

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadata"
)

func loadConfig(t *testing.T, name string) (*Config, error) {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	cfg := createDefaultConfig().(*Config)
	sub, err := cm.Sub(component.MustNewIDWithName(metadata.Type.String(), name).String())
	require.NoError(t, err)
	require.NoError(t, sub.Unmarshal(cfg))
	return cfg, confmap.Validate(cfg)
}

func TestLoadConfig(t *testing.T) {
	def, err := loadConfig(t, "")
	require.NoError(t, err)
	assert.Equal(t, &Config{
		Mode:                     ModeStitch,
		KeyAttribute:             "tracestitch.stitch_key",
		WaitDuration:             5 * time.Second,
		MaxWait:                  60 * time.Second,
		MaxBufferedSpans:         500_000,
		OriginalTraceIDAttribute: "tracestitch.original_trace_id",
		StitchMode:               StitchModeReparent,
		RequestID: RequestIDConfig{
			Enabled:    true,
			Attributes: []string{"guid:x-request-id", "guid.x-request-id", "http.request.header.x-request-id", "x-request-id"},
		},
		InstanceIdentity:     []string{"node_id", "k8s.pod.name", "service.instance.id", "host.name", "service.name"},
		LateSpanTTL:          60 * time.Second,
		MaxIndexEntries:      1_000_000,
		ReleaseBatchMaxSpans: 1024,
	}, def)

	custom, err := loadConfig(t, "custom")
	require.NoError(t, err)
	assert.Equal(t, &Config{
		Mode:                     ModeKey,
		KeyAttribute:             "route.key",
		WaitDuration:             2 * time.Second,
		MaxWait:                  30 * time.Second,
		MaxBufferedSpans:         1000,
		OriginalTraceIDAttribute: "orig.trace_id",
		StitchMode:               StitchModeLink,
		RequestID: RequestIDConfig{
			Enabled:       true,
			Attributes:    []string{"x-request-id"},
			TimeTolerance: 5 * time.Millisecond,
		},
		InstanceIdentity: []string{"k8s.pod.name", "host.name"},
		LateSpanTTL:      10 * time.Second,
		MaxIndexEntries:  500,

		ReleaseBatchMaxSpans: 100,
		EntryPoints:          EntryPointsConfig{Services: []string{"nightly-report.jobs"}},
	}, custom)
}

func TestInvalidConfig(t *testing.T) {
	for name, key := range map[string]string{
		"zero_wait":                  "wait_duration must be greater than 0",
		"negative_max_wait":          "max_wait must be greater than 0",
		"max_wait_below_wait":        "max_wait (5s) must be greater than or equal to wait_duration (10s)",
		"zero_max_buffered_spans":    "max_buffered_spans must be greater than 0",
		"empty_original_attribute":   "original_trace_id_attribute must not be empty",
		"bad_stitch_mode":            `stitch_mode must be "reparent" or "link", got "rewrite"`,
		"no_request_id_attributes":   "request_id.attributes must not be empty",
		"empty_request_id_attribute": "request_id.attributes[1] must not be empty",
		"negative_tolerance":         "request_id.time_tolerance must not be negative",
		"no_instance_identity":       "instance_identity must not be empty",
		"negative_late_ttl":          "late_span_ttl must not be negative",
		"negative_index":             "max_index_entries must not be negative",
		"zero_release_batch":         "release_batch_max_spans must be greater than 0",
		"empty_entry_point":          "entry_points.services[0] must not be empty",
		"bad_mode":                   `mode must be "stitch" or "key", got "route"`,
		"key_mode_without_attribute": "key_attribute must not be empty when mode is key",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(t, name)
			require.Error(t, err)
			assert.Contains(t, err.Error(), key)
		})
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	cm := confmap.NewFromStringMap(map[string]any{"wait_durration": "1s"})
	cfg := createDefaultConfig().(*Config)
	err := cm.Unmarshal(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wait_durration")
}
