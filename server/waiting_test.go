package server

import (
	"testing"

	"github.com/countersign/countersign/guard"
)

// What a waiting agent is told names who can approve now (an enrolled,
// unrevoked key) apart from who must enroll a key first, and the quorum
// with the approvals so far.
func TestWaitingForNamesWhoCanApproveNow(t *testing.T) {
	r := &guard.Request{Approvers: []string{"alice", "bob", "carol"}, ApproverNames: []string{"Alice Example", "Bob Example", ""}, Quorum: 1}
	tests := []struct {
		name    string
		quorum  int
		holders map[string]bool
		want    string
	}{
		{"not known", 1, nil, "Alice Example, Bob Example, carol"},
		{"all with a key", 1, map[string]bool{"alice": true, "bob": true, "carol": true}, "Alice Example, Bob Example, carol"},
		{"some to enroll", 1, map[string]bool{"bob": true, "dave": true}, "Bob Example [can approve now; still to enroll a security key: Alice Example, carol]"},
		{"quorum", 2, map[string]bool{"alice": true, "carol": true}, "2 of Alice Example, carol (1 so far) [can approve now; still to enroll a security key: Bob Example]"},
		{"nobody with a key", 2, map[string]bool{}, "2 of Alice Example, Bob Example, carol (1 so far) [none can approve yet: each must first enroll a security key]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r.Quorum, r.Approvals = tc.quorum, nil
			if tc.quorum > 1 {
				r.Approvals = []string{"alice"}
			}
			if got := waitingFor(r, tc.holders); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
