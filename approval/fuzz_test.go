package approval

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
)

// FuzzAssertionResponse feeds arbitrary bytes through the assertion path
// the server owns (parse, every named check, go-webauthn's verification).
// It must never panic, and never accept: the seeds are a genuine signature
// over the wrong decision and a forged signature over the right one, so any
// acceptance would be a forgery.
func FuzzAssertionResponse(f *testing.F) {
	fx := newFixture(f)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(f, "localhost", testOrigin)
	fx.enroll(f, "alice", alice)
	nr := paymentRequest("alice")
	nr.Timeout = 24 * time.Hour // long fuzz runs still reach the signature check
	req, err := fx.svc.Create(ctx, nr)
	if err != nil {
		f.Fatal(err)
	}
	opts, err := fx.svc.BeginDecision(ctx, req.ID, vocab.Approve)
	if err != nil {
		f.Fatal(err)
	}
	var raw []byte
	if err := fx.db.QueryRow(`SELECT session FROM approval_ceremonies WHERE id = ?`, opts.Ceremony).Scan(&raw); err != nil {
		f.Fatal(err)
	}
	var session webauthn.SessionData
	if err := json.Unmarshal(raw, &session); err != nil {
		f.Fatal(err)
	}
	r, err := fx.svc.load(ctx, fx.db, req.ID)
	if err != nil {
		f.Fatal(err)
	}
	denyDigest, _ := fx.svc.digest(r, vocab.Deny)
	f.Add(alice.Get(enc(denyDigest[:])))
	forger := approvaltest.NewSoftKey(f, "localhost", testOrigin)
	forger.Claim(alice.ID(), 50)
	f.Add(forger.Get(opts.PublicKey.Challenge.String()))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"AA","rawId":"AA","type":"public-key","response":{"clientDataJSON":"e30","authenticatorData":"AA","signature":"AA"}}`))

	ac := assertionCheck{req: r, decision: vocab.Approve, session: session}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ceremony.ParseAssertion(data)
		if err != nil {
			return
		}
		if v, err := fx.svc.verifyAssertion(ctx, ac, p); err == nil {
			t.Fatalf("accepted a fuzzed assertion from %s: %q", v.Key.Approver, data)
		}
	})
}
