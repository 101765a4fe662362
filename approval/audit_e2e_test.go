package approval

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
)

// With the real audit log in the same database, an export of enrollment,
// approvals (one redacted), a quorum, a denial and a refused assertion must
// pass the offline verifier, which recomputes every digest and checks every
// signature against the enrolled COSE keys.
func TestRealAuditLogExportVerifies(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Workaround: audit.ParsePublicKey (audit/key.go) splits the key text
	// at its last '+', which standard base64 key data may itself contain,
	// so about one key in four is refused by audit.Open. Reported to the
	// audit owner; until fixed, draw keys without a '+' in their data.
	for strings.Count(audit.PublicKeyText(key.Public().(ed25519.PublicKey)), "+") != 2 {
		kdir := t.TempDir()
		if key, err = audit.LoadOrCreateKey(kdir); err != nil {
			t.Fatal(err)
		}
	}
	log, err := audit.Open(ctx, db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	svc, err := New(ctx, db, log, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	f := &fixture{svc: svc, db: db, dir: dir, rec: nil}

	alice, bob := newSoftKey(t, "localhost", testOrigin), newSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)
	f.enroll(t, "bob", bob)

	redacted := paymentRequest("alice")
	redacted.RedactArgs = true
	r1, _ := svc.Create(ctx, redacted)
	if _, err := f.decide(t, r1.ID, digest.Approve, alice); err != nil {
		t.Fatal(err)
	}
	critical := paymentRequest("alice", "bob")
	critical.Level = "critical"
	r2, _ := svc.Create(ctx, critical)
	f.decide(t, r2.ID, digest.Approve, alice)
	if r, err := f.decide(t, r2.ID, digest.Approve, bob); err != nil || r.State != StateApproved {
		t.Fatalf("quorum: %v %v", r, err)
	}
	r3, _ := svc.Create(ctx, paymentRequest("bob"))
	if _, err := f.decide(t, r3.ID, digest.Deny, bob); err != nil {
		t.Fatal(err)
	}
	r4, _ := svc.Create(ctx, paymentRequest("alice"))
	alice.Origin = "http://evil.example"
	if _, err := f.decide(t, r4.ID, digest.Approve, alice); err == nil {
		t.Fatal("wrong origin accepted")
	}
	svc.Cancel(ctx, r4.ID, "test over")

	var export bytes.Buffer
	if err := log.Export(ctx, &export, 0); err != nil {
		t.Fatal(err)
	}
	sum, err := audit.Verify(bytes.NewReader(export.Bytes()), log.PublicKey(), nil)
	if err != nil {
		t.Fatalf("offline verify: %v\n%s", err, export.String())
	}
	// 1 + 2 approve assertions + 1 deny.
	if sum.Assertions < 4 {
		t.Fatalf("verifier checked %d assertions: %s", sum.Assertions, sum)
	}
}
