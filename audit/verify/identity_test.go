package verify

import (
	"bytes"
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
		{"another kind", func(e *audit.Entry) { e.Kind = vocab.KindCredentialRevoked }, "only enrollments and key decisions"},
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
