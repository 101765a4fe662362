package ciba

import (
	"context"
	"net/url"
	"testing"
)

// A pending answer names who can approve now (an enrolled, unrevoked key)
// apart from who must enroll a key first.
func TestPendingNamesWhoCanApproveNow(t *testing.T) {
	s := newStack(t, stackOptions{agents: true, enabled: true})
	poll := func() string {
		t.Helper()
		start := s.post(t, PathAuthorize, "ci-bot", authForm(func(f url.Values) { f.Set("login_hint", "role:treasury") }))
		if start.status != 200 {
			t.Fatalf("bc-authorize: %d %v", start.status, start.body)
		}
		r := s.post(t, PathToken, "ci-bot", pollForm(start.str("auth_req_id")))
		if r.str("error") != CodeAuthorizationPending {
			t.Fatalf("poll: %v", r.body)
		}
		return r.str("error_description")
	}
	if got, want := poll(), "waiting for Alice or Bob"; got != want {
		t.Errorf("both with a key: %q, want %q", got, want)
	}
	keys, err := s.svc.Credentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ApproverID == "bob" {
			if err := s.svc.RevokeCredential(context.Background(), k.ID, "lost"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := poll(), "waiting for Alice (can approve now; still to enroll a security key: Bob)"; got != want {
		t.Errorf("bob's key revoked: %q\nwant %q", got, want)
	}
}
