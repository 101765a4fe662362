package authz

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// With identity roles, a tool may name a role nobody in the YAML list
// holds (approvers: []); the decision keeps role:NAME for the approval
// service to turn into the people who hold it, a critical quorum is not
// held to a count, the document carries the roles, and a replay accepts
// the people recorded for the role.
func TestIdentityRoles(t *testing.T) {
	tools := map[string]config.Tool{
		"deploy":   {Level: vocab.LevelHigh, Approvers: []string{"role:sre", "role:treasury"}},
		"transfer": {Level: vocab.LevelCritical, Approvers: []string{"role:treasury"}, Quorum: 3},
	}
	yaml := []config.Approver{{ID: "bob", Roles: []string{"treasury"}}}
	if _, err := Compile(tools, yaml, Options{}); err == nil || !strings.Contains(err.Error(), `no approver has role "sre"`) {
		t.Fatalf("without identity roles: %v", err)
	}
	opts := Options{IdentityRoles: map[string][]string{"sre": {"sre"}, "treasury": {"finance-approvers"}}}
	p, err := Compile(tools, yaml, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compile(tools, nil, opts); err != nil {
		t.Fatalf("approvers: [] with identity roles: %v", err)
	}
	d := p.Decide(Input{Tool: "deploy", Args: map[string]any{}})
	if !slices.Equal(d.Approvers, []string{"bob", "role:sre", "role:treasury"}) {
		t.Errorf("deploy approvers %v", d.Approvers)
	}

	doc := NewDocument(tools, yaml, opts)
	b, _ := json.Marshal(doc)
	var back Document
	json.Unmarshal(b, &back)
	if !strings.Contains(string(b), `"identity_roles":{"sre":["sre"],"treasury":["finance-approvers"]}`) {
		t.Errorf("document: %s", b)
	}
	if b2, _ := json.Marshal(NewDocument(tools, yaml, Options{})); strings.Contains(string(b2), "identity_roles") {
		t.Errorf("a document without a provider names identity_roles: %s", b2)
	}
	rp, err := back.Compile()
	if err != nil {
		t.Fatal(err)
	}
	rec := func(approvers ...string) Recorded {
		return Recorded{Tool: "deploy", Args: map[string]any{}, Level: vocab.LevelHigh,
			Requirement: &Requirement{Approvers: approvers, Quorum: 1, UserVerification: vocab.UVPreferred}}
	}
	if err := rp.Replay(rec("bob", "idp-aaaaaaaaaaaaaaaa", "idp-bbbbbbbbbbbbbbbb")); err != nil {
		t.Errorf("people recorded for the roles: %v", err)
	}
	if err := rp.Replay(rec("bob", "mallory")); err == nil {
		t.Error("an approver the policy does not give was accepted")
	}
}
