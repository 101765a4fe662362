package page

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The page's own options: with only origins set, it serves the origins'
// hosts and refuses others; with no origins at all it refuses everything
// (fail closed) rather than serving without a Host check.
func TestPageOptionsDefaultHostsFromOrigins(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		opts Options
		host string
		want int
	}{
		{"origin's host", Options{Origins: []string{testOrigin}}, "localhost:8710", http.StatusOK},
		{"another host", Options{Origins: []string{testOrigin}}, "evil.example:8710", http.StatusForbidden},
		{"other port", Options{Origins: []string{testOrigin}}, "localhost:8711", http.StatusForbidden},
		{"no origins", Options{}, "localhost:8710", http.StatusForbidden},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Host = tc.host
		Handler(f.svc, tc.opts).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: GET / with Host %s: %d, want %d", tc.name, tc.host, rec.Code, tc.want)
		}
	}
}
