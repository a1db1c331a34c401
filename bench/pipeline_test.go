package bench

import (
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// manifest is the part of an ocb manifest that says what is built in.
type manifest struct {
	Receivers, Processors, Exporters, Extensions, Connectors, Providers []struct {
		Gomod  string `yaml:"gomod"`
		Import string `yaml:"import"`
	}
	Replaces []string `yaml:"replaces"`
}

func (m manifest) modules() []string {
	var out []string
	for _, list := range [][]struct {
		Gomod  string `yaml:"gomod"`
		Import string `yaml:"import"`
	}{m.Receivers, m.Processors, m.Exporters, m.Extensions, m.Connectors, m.Providers} {
		for _, c := range list {
			out = append(out, c.Gomod+" "+c.Import)
		}
	}
	return append(out, m.Replaces...)
}

func readManifest(t *testing.T, path string) manifest {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var m manifest
	require.NoError(t, yaml.Unmarshal(b, &m))
	return m
}

// TestPipelineManifestExtendsTheDistribution: the pipeline benchmark's
// distribution is the users' one, module for module and version for
// version, plus groupbytrace and pprof only.
func TestPipelineManifestExtendsTheDistribution(t *testing.T) {
	dist := readManifest(t, "../builder-config.yaml").modules()
	bench := readManifest(t, "pipeline/builder-config.yaml").modules()
	require.NotEmpty(t, dist)
	var extra []string
	for _, m := range bench {
		if !slices.Contains(dist, m) {
			extra = append(extra, m)
		}
	}
	for _, m := range dist {
		require.Contains(t, bench, m, "the benchmark distribution lacks a module of the users' one")
	}
	require.ElementsMatch(t, []string{
		"github.com/open-telemetry/opentelemetry-collector-contrib/extension/pprofextension v0.165.0 ",
		"github.com/open-telemetry/opentelemetry-collector-contrib/processor/groupbytraceprocessor v0.165.0 ",
	}, extra)
}
