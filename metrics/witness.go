package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WitnessStatus is one witness's progress as the metrics show it.
type WitnessStatus struct {
	Name     string        // the witness key's name
	Cosigned int64         // tree size of the newest checkpoint it cosigned
	Behind   int64         // entries checkpointed but not yet cosigned
	Lag      time.Duration // how long the oldest uncosigned checkpoint has waited
	Refused  bool          // it refuses the log (another history, or unknown log or key)
}

var (
	witnessCosignedDesc = prometheus.NewDesc("countersign_witness_cosigned_tree_size",
		"Tree size of the newest audit checkpoint the witness cosigned.", []string{"witness"}, nil)
	witnessBehindDesc = prometheus.NewDesc("countersign_witness_lag_entries",
		"Audit entries checkpointed that the witness has not cosigned yet.", []string{"witness"}, nil)
	witnessLagDesc = prometheus.NewDesc("countersign_witness_lag_seconds",
		"How long the oldest checkpoint the witness has not cosigned has waited; 0 when it is caught up.", []string{"witness"}, nil)
	witnessRefusedDesc = prometheus.NewDesc("countersign_witness_refused",
		"1 while the witness refuses the log: it holds another history (a rollback) or does not know the log or its key.", []string{"witness"}, nil)
)

// witnessCollector reads every witness's status at scrape time.
type witnessCollector struct{ status func() []WitnessStatus }

func (c witnessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- witnessCosignedDesc
	ch <- witnessBehindDesc
	ch <- witnessLagDesc
	ch <- witnessRefusedDesc
}

func (c witnessCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.status() {
		refused := 0.0
		if w.Refused {
			refused = 1
		}
		ch <- prometheus.MustNewConstMetric(witnessCosignedDesc, prometheus.GaugeValue, float64(w.Cosigned), w.Name)
		ch <- prometheus.MustNewConstMetric(witnessBehindDesc, prometheus.GaugeValue, float64(w.Behind), w.Name)
		ch <- prometheus.MustNewConstMetric(witnessLagDesc, prometheus.GaugeValue, w.Lag.Seconds(), w.Name)
		ch <- prometheus.MustNewConstMetric(witnessRefusedDesc, prometheus.GaugeValue, refused, w.Name)
	}
}
