package ciba

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/countersign/countersign/config"
)

// A reload that removes an agent from http.agents takes the backchannel
// from it too (its token was still taken here while the MCP listener
// refused it), one that adds an agent lets it in, and login_hint names
// the approvers in force. A directory with a bad hash changes nothing.
func TestAReloadSwapsWhoMayAskAndWhomAHintNames(t *testing.T) {
	s := newStack(t, stackOptions{agents: true, enabled: true})
	if r := s.post(t, PathAuthorize, "other-bot", authForm()); r.status != 200 {
		t.Fatalf("other-bot before the reload: %d %v", r.status, r.body)
	}
	agent := func(id, tok string) config.Agent {
		sum := sha256.Sum256([]byte(tok))
		return config.Agent{ID: id, TokenSHA256: hex.EncodeToString(sum[:])}
	}
	s.tokens["new-bot"] = "token-of-new-bot"
	agents := []config.Agent{agent("ci-bot", s.tokens["ci-bot"]), agent("new-bot", s.tokens["new-bot"])}
	if err := s.server().SetPeople(agents, people[:1]); err != nil { // alice only
		t.Fatal(err)
	}
	if r := s.post(t, PathAuthorize, "other-bot", authForm()); r.status != 401 || r.str("error") != CodeInvalidClient {
		t.Errorf("a removed agent: %d %v, want 401 %s", r.status, r.body, CodeInvalidClient)
	}
	if r := s.post(t, PathAuthorize, "new-bot", authForm()); r.status != 200 {
		t.Errorf("an added agent: %d %v", r.status, r.body)
	}
	if r := s.post(t, PathAuthorize, "ci-bot", authForm(set("login_hint", "bob"))); r.status != 400 || r.str("error") != CodeUnknownUserID {
		t.Errorf("login_hint of a removed approver: %d %v, want 400 %s", r.status, r.body, CodeUnknownUserID)
	}
	bad := append(agents, config.Agent{ID: "other-bot", TokenSHA256: "not hex"})
	if err := s.server().SetPeople(bad, people); err == nil {
		t.Fatal("a token hash that is not hex was taken")
	}
	if r := s.post(t, PathAuthorize, "new-bot", authForm()); r.status != 200 {
		t.Errorf("after a refused swap, the agents in force: %d %v", r.status, r.body)
	}
	if r := s.post(t, PathAuthorize, "other-bot", authForm()); r.status != 401 {
		t.Errorf("after a refused swap, a removed agent: %d %v", r.status, r.body)
	}
}
