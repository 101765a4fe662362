package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var exportLagDesc = prometheus.NewDesc("countersign_audit_export_lag_entries",
	"Audit entries the OTLP endpoint of audit.export has not acknowledged yet.", nil, nil)

// exportCollector reads the audit feed's lag at scrape time.
type exportCollector struct{ m *Metrics }

func (c exportCollector) Describe(ch chan<- *prometheus.Desc) { ch <- exportLagDesc }

func (c exportCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lag, err := c.m.opts.ExportLag(ctx)
	if err != nil {
		c.m.opts.Logger.Warn("metrics: reading the audit export's lag", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(exportLagDesc, prometheus.GaugeValue, float64(lag))
}
