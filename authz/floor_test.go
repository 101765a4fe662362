package authz

import (
	"strings"
	"testing"

	"github.com/countersign/countersign/vocab"
)

// A CIBA request decided with tools.ciba as the floor replays when it is
// at least as strict as the floor, and names only rules that exist and
// raise no higher than it; anything weaker is caught.
func TestReplayFloor(t *testing.T) {
	_, rp := replayPolicy(t)
	args := map[string]any{"login_hint": "role:treasury", "scope": "openid", "authorization_details": []any{}}
	req := func(approvers []string, quorum int, uv vocab.UserVerification) *Requirement {
		return &Requirement{Approvers: approvers, Quorum: quorum, UserVerification: uv}
	}
	ok := []Recorded{
		{Tool: "ciba", Args: args, Level: "high", Requirement: req([]string{"alice", "bob"}, 1, vocab.UVPreferred)},
		// login_hint narrowed the approvers.
		{Tool: "ciba", Args: args, Level: "high", Requirement: req([]string{"bob"}, 1, vocab.UVPreferred)},
		// The transfer policy raised it.
		{Tool: "ciba", Args: args, Level: "critical", Rules: []string{"transfer:very-large"}, Requirement: req([]string{"alice", "bob"}, 2, vocab.UVRequired)},
		{Tool: "ciba", Args: args, Level: "high", Rules: []string{"transfer:large-or-new-payee"}, Requirement: req([]string{"alice", "bob"}, 1, vocab.UVPreferred)},
	}
	for i, r := range ok {
		if err := rp.ReplayFloor(r); err != nil {
			t.Errorf("genuine %d: %v", i, err)
		}
	}
	bad := []struct {
		r    Recorded
		want string
	}{
		{Recorded{Tool: "ciba", Args: args, Level: "low"}, "at least"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Requirement: req([]string{"mallory"}, 1, vocab.UVPreferred)}, "does not allow"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Requirement: req([]string{"alice"}, 1, vocab.UVDiscouraged)}, "user verification"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Rules: []string{"transfer:very-large"}, Requirement: req([]string{"alice"}, 1, vocab.UVPreferred)}, "raises to critical"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Rules: []string{"transfer:made-up"}}, "does not have"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Rules: []string{"nowhere:x"}}, "not a tool"},
		{Recorded{Tool: "ciba", Args: args, Level: "high", Rules: []string{"made-up"}}, "does not have"},
	}
	for i, tc := range bad {
		if err := rp.ReplayFloor(tc.r); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bad %d: %v, want an error saying %q", i, err, tc.want)
		}
	}
}
