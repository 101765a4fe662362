package main

import (
	"testing"

	"github.com/countersign/countersign/config"
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
		if got := approvalOptions(c).RequireSignIn; got != tc.want {
			t.Errorf("listen %s public_url %q: RequireSignIn %v, want %v", tc.listen, c.Approval.PublicURL, got, tc.want)
		}
	}
}
