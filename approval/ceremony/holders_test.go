package ceremony

import (
	"reflect"
	"testing"
)

// Holders are the approvers with an unrevoked key; Split names who can
// approve now apart from who must enroll first, by name where there is one.
func TestHoldersAndSplit(t *testing.T) {
	h := Holders([]Credential{
		{ApproverID: "alice"},
		{ApproverID: "bob", Revoked: true},
		{ApproverID: "carol", Revoked: true}, {ApproverID: "carol"},
	})
	if want := map[string]bool{"alice": true, "carol": true}; !reflect.DeepEqual(h, want) {
		t.Errorf("Holders: %v, want %v", h, want)
	}
	now, enroll := Split(h, []string{"alice", "bob", "carol"}, []string{"Alice", "Bob"})
	if !reflect.DeepEqual(now, []string{"Alice", "carol"}) || !reflect.DeepEqual(enroll, []string{"Bob"}) {
		t.Errorf("Split: now %v, enroll %v", now, enroll)
	}
	if now, enroll := Split(nil, []string{"alice", "bob"}, nil); len(now) != 2 || enroll != nil {
		t.Errorf("Split without holders: now %v, enroll %v; want everyone able", now, enroll)
	}
}
