package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
)

// The page asks approvers to sign in exactly when it may be reached from
// beyond this machine.
func TestApproverPageSignInFollowsListen(t *testing.T) {
	for _, tc := range []struct {
		listen, publicURL string
		want              bool
	}{
		{"127.0.0.1:8710", "", false},
		{"0.0.0.0:8710", "", true},
		{"192.0.2.7:443", "https://approve.example.com", true},
		{"127.0.0.1:8710", "https://approve.example.com", true}, // behind a proxy
	} {
		c := testConfig(t, func(c *config.Config) {
			c.Approval.Listen, c.Approval.PublicURL = tc.listen, tc.publicURL
		})
		if tc.publicURL == "" {
			c.Approval.PublicURL = ""
			c.Approval.Derive(tc.listen)
		}
		if got := daemon.PageOptions(c, nil).RequireSignIn; got != tc.want {
			t.Errorf("listen %s public_url %q: RequireSignIn %v, want %v", tc.listen, c.Approval.PublicURL, got, tc.want)
		}
	}
}

// Refusals at the page's HTTP layer are counted by check and logged, never
// written to the audit log.
func TestPageRefusalsAreCountedNotAudited(t *testing.T) {
	p := startProduct(t, nil)
	exported := func() string {
		var b strings.Builder
		if err := p.Audit().Export(context.Background(), &b, 0); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	log := exported()
	before := scrape(t, p.page)
	begin := p.page + "/api/requests/00000000-0000-4000-8000-000000000000/begin"
	for _, mod := range []func(*http.Request){
		func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") },
		func(r *http.Request) { r.Host = "evil.example" },
		func(r *http.Request) {}, // no CSRF cookie
	} {
		req, _ := http.NewRequest(http.MethodPost, begin, strings.NewReader(`{"decision":"approve"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", p.page)
		mod(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	after := scrape(t, p.page)
	for _, check := range []string{"origin", "host_not_allowed", "csrf"} {
		key := `countersign_approval_page_refusals_total{check="` + check + `"}`
		if after[key]-before[key] != 1 {
			t.Errorf("%s moved by %v, want 1", key, after[key]-before[key])
		}
	}
	if exported() != log {
		t.Error("page refusals reached the audit log")
	}
}
