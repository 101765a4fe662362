package authz

import (
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/vocab"
)

// The decisions of a backchannel request and of the tools its details
// describe combine, the stricter winning in every part.
func TestCombineTakesTheStricter(t *testing.T) {
	floor := Decision{Level: "high", Rules: []string{"r"}, Reason: "floor", Approvers: []string{"alice", "bob", "carol"},
		Quorum: 1, UserVerification: vocab.UVDiscouraged, Timeout: 5 * time.Minute}
	for _, tc := range []struct {
		name string
		d    Decision
		want Decision
	}{
		{"a low action adds nothing", Decision{Level: "low"}, floor},
		{"critical raises, intersects, needs UV", Decision{Level: "critical", Rules: []string{"big"}, Approvers: []string{"bob", "carol", "dave"},
			Quorum: 2, UserVerification: vocab.UVRequired, Timeout: time.Minute},
			Decision{Level: "critical", Rules: []string{"r", "transfer:big"}, Approvers: []string{"bob", "carol"}, Quorum: 2,
				UserVerification: vocab.UVRequired, Timeout: time.Minute}},
		{"high keeps the stronger UV and the shorter timeout", Decision{Level: "high", Approvers: []string{"alice"}, Quorum: 1,
			UserVerification: vocab.UVPreferred, Timeout: 10 * time.Minute},
			Decision{Level: "high", Rules: []string{"r"}, Approvers: []string{"alice"}, Quorum: 1, UserVerification: vocab.UVPreferred, Timeout: 5 * time.Minute}},
		{"deny wins", Decision{Level: "deny", Rules: []string{"never"}, Reason: "no"}, Decision{Level: "deny", Rules: []string{"transfer:never"}}},
		{"nobody both allow", Decision{Level: "high", Approvers: []string{"erin"}, Quorum: 1}, Decision{Level: "deny", Rules: []string{"r"}}},
	} {
		got := Combine(floor, "transfer", tc.d)
		if got.Level != tc.want.Level || strings.Join(got.Rules, ",") != strings.Join(tc.want.Rules, ",") ||
			strings.Join(got.Approvers, ",") != strings.Join(tc.want.Approvers, ",") || got.Quorum != tc.want.Quorum ||
			got.UserVerification != tc.want.UserVerification || got.Timeout != tc.want.Timeout {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
