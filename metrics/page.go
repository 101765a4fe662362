package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// refusedHeader is page.RefusedHeader (approval/page): the approver page names the check
// that refused a request at the HTTP layer in it. (metrics does not import
// approval; a test in cmd checks the two agree by counting a real refusal.)
const refusedHeader = "Countersign-Refused"

// pageChecks are the label values countersign_approval_page_refusals_total
// takes; anything else is counted as "other", so a label never carries what
// a visitor sent.
var pageChecks = map[string]bool{
	"host_not_allowed": true, "origin": true, "csrf": true, "content_type": true,
	"too_large": true, "bad_id": true, "rate_limited": true,
}

// ApproverPage wraps the approver page's handler and counts the requests it
// refuses before they reach its logic (Host, Origin, CSRF, format, rate):
//
//	countersign_approval_page_refusals_total{check}
//
// These refusals are not in the audit log (what a visitor sends is not the
// server's to sign); the count and the process log are where they show.
func (m *Metrics) ApproverPage(next http.Handler) http.Handler {
	m.pageOnce.Do(func() {
		m.pageRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "countersign_approval_page_refusals_total",
			Help: "Requests the approver page refused at the HTTP layer, by check.",
		}, []string{"check"})
		m.reg.MustRegister(m.pageRefusals)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&refusalWriter{ResponseWriter: w, m: m}, r)
	})
}

// refusalWriter counts a response whose headers name a refusal.
type refusalWriter struct {
	http.ResponseWriter
	m    *Metrics
	once sync.Once
}

func (w *refusalWriter) WriteHeader(code int) {
	w.once.Do(func() {
		if check := w.Header().Get(refusedHeader); check != "" {
			if !pageChecks[check] {
				check = "other"
			}
			w.m.pageRefusals.WithLabelValues(check).Inc()
		}
	})
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush on the event stream.
func (w *refusalWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
