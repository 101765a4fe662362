//go:build cgo

package pkcs11key

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

const softhsm = "/usr/lib/softhsm/libsofthsm2.so"

// softToken makes a SoftHSM token of its own in a temporary directory.
func softToken(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(softhsm); err != nil {
		t.Fatalf("SoftHSM is not installed (%v): apt-get install softhsm2", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+dir+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "countersign", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
}

// The audit log signed by a key in SoftHSM verifies with its public key,
// and so does a rotation from the file key to the token's.
func TestLogSignedInSoftHSMVerifies(t *testing.T) {
	softToken(t)
	ctx := context.Background()
	hsm, err := Generate(softhsm, "countersign", "1234", "audit")
	if err != nil {
		t.Fatal(err)
	}
	hsm.Close()
	key, err := Open(softhsm, "countersign", "1234", "audit")
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()

	db := storetest.Open(t, t.TempDir())
	file := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	var l *audit.Log
	if s := storetest.StoreOf(db); s != nil { // the PostgreSQL pass
		l, err = auditpg.Open(ctx, s, file, audit.Options{})
	} else {
		l, err = audit.Open(ctx, db, file, audit.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Append(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "before"})
	if _, err := l.RotateKey(ctx, key, "moved to an HSM"); err != nil {
		t.Fatalf("rotate to the token's key: %v", err)
	}
	if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "after"}); err != nil {
		t.Fatalf("append signed in the token: %v", err)
	}
	var buf bytes.Buffer
	if err := l.Export(ctx, &buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(&buf, audit.PublicKeyText(file.Public().(ed25519.PublicKey)), verify.Options{AllSignatures: true}); err != nil {
		t.Fatalf("verify from the file key: %v", err)
	}
}
