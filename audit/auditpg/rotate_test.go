package auditpg

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A rotated log reopens with the new key and verifies from the first on
// either dialect: the chain of keys is read from the stored entries.
func TestRotatedLogReopensOnBothDialects(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		k1, k2 := seededKey(1), seededKey(2)
		l, err := Open(ctx, db, k1, audit.Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, l, routine(1))
		if _, err := l.RotateKey(ctx, k2, "test"); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(ctx, db, k2, audit.Options{})
		if err != nil {
			t.Fatalf("reopen with the new key: %v", err)
		}
		defer l.Close()
		mustAppend(t, l, routine(2))
		var buf bytes.Buffer
		if err := l.Export(ctx, &buf, 0); err != nil {
			t.Fatal(err)
		}
		first := audit.PublicKeyText(k1.Public().(ed25519.PublicKey))
		if _, err := verify.Export(&buf, first, verify.Options{AllSignatures: true}); err != nil {
			t.Fatalf("verify from the first key: %v", err)
		}
	})
}
