package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Refusals are counted by their check; a check the page does not name in
// its fixed list (what a visitor might smuggle into a header) is "other".
func TestApproverPageCountsRefusals(t *testing.T) {
	m := New(Options{})
	page := m.ApproverPage(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c := r.URL.Query().Get("refuse"); c != "" {
			w.Header().Set(refusedHeader, c)
			w.WriteHeader(http.StatusForbidden)
			return
		}
		io.WriteString(w, "ok")
	}))
	srv := httptest.NewServer(page)
	defer srv.Close()
	for _, q := range []string{"csrf", "csrf", "host_not_allowed", "ATTACKER", ""} {
		resp, err := http.Get(srv.URL + "/?refuse=" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	metrics := httptest.NewRecorder()
	m.Handler().ServeHTTP(metrics, httptest.NewRequest("GET", "/metrics", nil))
	body := metrics.Body.String()
	for _, want := range []string{
		`countersign_approval_page_refusals_total{check="csrf"} 2`,
		`countersign_approval_page_refusals_total{check="host_not_allowed"} 1`,
		`countersign_approval_page_refusals_total{check="other"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in\n%s", want, body)
		}
	}
	if strings.Contains(body, "ATTACKER") {
		t.Error("a visitor's header became a label")
	}
}
