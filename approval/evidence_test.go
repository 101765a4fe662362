package approval

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Evidence names each counted approval by the hash of the very assertion
// the audit log holds, and its digest is the challenge the keys signed.
func TestEvidenceMatchesTheAuditLog(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		nr := paymentRequest("alice", "bob")
		nr.Level = "critical"
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Evidence(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("evidence of a pending request: %v", err)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Evidence(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("evidence with one of two approvals: %v", err)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, bob); err != nil {
			t.Fatal(err)
		}
		ev, err := f.svc.Evidence(ctx, req.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.Votes) != 2 || ev.Votes[0].Approver != "alice" || ev.Votes[1].Approver != "bob" {
			t.Fatalf("votes %+v", ev.Votes)
		}
		byApprover := map[string]audit.Entry{}
		for _, e := range f.rec.Entries() {
			if e.Kind == vocab.KindApprovalAssertion && e.RequestID == req.ID {
				byApprover[e.Approver] = e
			}
		}
		for _, v := range ev.Votes {
			e := byApprover[v.Approver]
			dec := func(s string) []byte {
				b, err := base64.RawURLEncoding.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			want := digest.AssertionSHA256(dec(e.AuthenticatorData), dec(e.ClientDataJSON), dec(e.Signature))
			if hex.EncodeToString(v.AssertionSHA256) != hex.EncodeToString(want[:]) {
				t.Errorf("%s: assertion_sha256 %x, the audit entry's assertion hashes to %x", v.Approver, v.AssertionSHA256, want)
			}
			if v.At.IsZero() {
				t.Errorf("%s: no time", v.Approver)
			}
			var cd struct{ Challenge string }
			json.Unmarshal(dec(e.ClientDataJSON), &cd)
			if cd.Challenge != base64.RawURLEncoding.EncodeToString(ev.Digest[:]) {
				t.Errorf("%s signed challenge %s, evidence digest %x", v.Approver, cd.Challenge, ev.Digest)
			}
		}
		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted}); err != nil {
			t.Fatal(err)
		}
		if after, err := f.svc.Evidence(ctx, req.ID); err != nil || after.Digest != ev.Digest || len(after.Votes) != 2 {
			t.Fatalf("evidence after execution: %+v %v", after, err)
		}

		denied, _ := f.svc.Create(ctx, paymentRequest("alice"))
		if _, err := f.decide(t, denied.ID, vocab.Deny, alice); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Evidence(ctx, denied.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("evidence of a denied request: %v", err)
		}
		if _, err := f.svc.Evidence(ctx, "no-such-id"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("evidence of an unknown request: %v", err)
		}
	})
}
