// The physical references on the machine at hand: what one Ed25519
// signature and one durable SQLite commit cost, the floors under an audit
// append.

package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

func BenchmarkEd25519Sign(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := sha256.Sum256([]byte("entry"))
	for b.Loop() {
		ed25519.Sign(priv, msg[:])
	}
}

func BenchmarkEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := sha256.Sum256([]byte("entry"))
	sig := ed25519.Sign(priv, msg[:])
	for b.Loop() {
		if !ed25519.Verify(pub, msg[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkSQLiteDurableCommit is one small INSERT committed with the
// pragmas Countersign's store uses (WAL, synchronous=FULL): one fsync.
func BenchmarkSQLiteDurableCommit(b *testing.B) {
	db, err := store.Connect(context.Background(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)`); err != nil {
		b.Fatal(err)
	}
	v := make([]byte, 256)
	for b.Loop() {
		if _, err := db.Exec(`INSERT INTO t (v) VALUES (?)`, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	sum, _ := digest.ArgsSHA256([]byte(`{"amount":500000,"currency":"USD","from":"operating","to":"Vendor X"}`))
	a := digest.Action{
		RequestID: "6f1c2f7e-1d7a-4a57-9a8e-2b1f3c4d5e6f", Decision: vocab.Approve, Tool: "transfer",
		AuthorizationDetails: []byte(`[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X"}]`),
		ArgsSHA256:           sum, Display: "Payment: USD 500,000.00\nTo: Vendor X", Nonce: make([]byte, 32),
	}
	for b.Loop() {
		if _, err := digest.Compute(a); err != nil {
			b.Fatal(err)
		}
	}
}
