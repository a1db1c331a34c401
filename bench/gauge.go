package bench

import (
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func gauge(tel *componenttest.Telemetry, name string) (int64, bool) {
	m, err := tel.GetMetric(name)
	if err != nil {
		return 0, false
	}
	g, ok := m.Data.(metricdata.Gauge[int64])
	if !ok || len(g.DataPoints) == 0 {
		return 0, false
	}
	return g.DataPoints[len(g.DataPoints)-1].Value, true
}
