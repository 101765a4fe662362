package verify

import (
	"bytes"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Entries that name a person of the identity provider verify when their
// approver is the id derived from issuer and subject; a changed subject,
// a foreign kind, groups on an enrollment or a malformed auth time do not.
func TestIdentityProviderMembers(t *testing.T) {
	const issuer = "https://login.example.com/realms/acme"
	key := seededKey(1)
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	alice := audit.IdPApproverID(issuer, "alice")
	person := func(e audit.Entry) audit.Entry {
		e.Approver, e.IdPIssuer, e.IdPSubject, e.IdPEmail, e.IdPAuthTime = alice, issuer, "alice", "alice@example.com", "2026-03-01T09:00:00Z"
		return e
	}
	mustAppend(t, l, person(audit.Entry{Kind: vocab.KindEnrollmentCreated, ExpiresAt: "2026-03-01T09:10:00Z", Reason: "self-service enrollment link"}))
	mustAppend(t, l, audit.Entry{Kind: vocab.KindEnrollmentCreated, Approver: "bob", ExpiresAt: "2026-03-01T09:10:00Z", Reason: "one-time enrollment link issued"})
	export := exportBytes(t, l, 0)
	if _, err := Export(bytes.NewReader(export), l.PublicKey(), Options{AllSignatures: true}); err != nil {
		t.Fatalf("an export with idp_ members: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*audit.Entry)
		reason string
	}{
		{"another subject", func(e *audit.Entry) { e.IdPSubject = "mallory" }, `is not the id`},
		{"no subject", func(e *audit.Entry) { e.IdPSubject = "" }, "without idp_issuer and idp_subject"},
		{"groups on an enrollment", func(e *audit.Entry) { e.IdPGroups = []string{"finance-approvers"} }, "only key decisions record the groups"},
		{"bad auth time", func(e *audit.Entry) { e.IdPAuthTime = "yesterday" }, "is not an RFC 3339 time"},
		{"another kind", func(e *audit.Entry) { e.Kind = vocab.KindCredentialRevoked }, "only enrollments, key decisions and suspensions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := resign(t, export, key, func(e *audit.Entry) {
				if e.Seq == 1 {
					tc.mutate(e)
				}
			})
			wantVerifyErr(t, bad, pubText(key), nil, 1, tc.reason)
		})
	}
}

// A key decision by a person of the provider on a request made under a
// logged policy holds only when the groups it records map, under that
// policy's identity_roles, to a role the policy names for the tool.
func TestIdentityProviderGroupsMakeTheApproverEligible(t *testing.T) {
	const issuer = "https://login.example.com"
	policy := `{"tools":{"transfer":{"level":"high","approvers":["bob"],"rules":[{"when":"true","level":"critical","approvers":["role:treasury"]}]}},` +
		`"approvers":[{"id":"bob"}],"default_timeout":"5m0s","identity_roles":{"ops":["sre"],"treasury":["finance-approvers"]}}`
	s := &logState{creds: credentials{}, req: newRequirements(), policies: map[string]*audit.Entry{
		"p1": {Seq: 1, Kind: vocab.KindPolicyLoaded, Policy: []byte(policy)},
	}}
	s.req.requests["r1"] = &request{seq: 2, entry: &audit.Entry{Seq: 2, Kind: vocab.KindApprovalRequested, Tool: "transfer", PolicySHA256: "p1"}}
	decision := func(groups ...string) *audit.Entry {
		return &audit.Entry{Kind: vocab.KindApprovalAssertion, RequestID: "r1", Approver: audit.IdPApproverID(issuer, "alice"),
			IdPIssuer: issuer, IdPSubject: "alice", IdPAuthTime: "2026-03-01T09:00:00Z", IdPGroups: groups}
	}
	if reason := s.idpEligible(decision("finance-approvers", "staff")); reason != "" {
		t.Errorf("a member of finance-approvers: %s", reason)
	}
	for _, groups := range [][]string{{"sre"}, {"staff"}, nil} {
		if reason := s.idpEligible(decision(groups...)); !strings.Contains(reason, "give none of the roles [treasury] the policy at seq 1 lets decide transfer") {
			t.Errorf("groups %v: %q", groups, reason)
		}
	}
	// An approver of mcp.yaml carries no idp_ members: nothing to check.
	if reason := s.idpEligible(&audit.Entry{Kind: vocab.KindApprovalAssertion, RequestID: "r1", Approver: "bob"}); reason != "" {
		t.Errorf("bob: %s", reason)
	}
}
