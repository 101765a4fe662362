package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// heldKey is a server key the log reaches only through crypto.Signer, as
// a PKCS #11 or KMS key would be: the log cannot see its private half.
// gone makes it fail as a removed token does.
type heldKey struct {
	key  ed25519.PrivateKey
	gone atomic.Bool
}

func (h *heldKey) Public() crypto.PublicKey { return h.key.Public() }
func (h *heldKey) Sign(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if h.gone.Load() {
		return nil, errors.New("token removed")
	}
	return h.key.Sign(r, msg, opts)
}

func TestLogSignedThroughASignerVerifies(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	key := &heldKey{key: seededKey(7)}
	l, err := openAuditSigner(ctx, db, key, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for range 3 {
		mustAppend(t, l, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "bad args"})
	}
	pub := audit.PublicKeyText(seededKey(7).Public().(ed25519.PublicKey))
	if l.PublicKey() != pub {
		t.Fatalf("PublicKey %q, want %q", l.PublicKey(), pub)
	}
	var buf bytes.Buffer
	if err := l.Export(ctx, &buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Export(bytes.NewReader(buf.Bytes()), pub, Options{AllSignatures: true}); err != nil {
		t.Fatalf("export signed through a Signer: %v", err)
	}

	// A signer that cannot sign fails the append, and nothing is written.
	key.gone.Store(true)
	if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "x"}); err == nil || !strings.Contains(err.Error(), "token removed") {
		t.Fatalf("Append with the signer gone: %v, want its error", err)
	}
	key.gone.Store(false)
	if e := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "y"}); e.Seq != 4 {
		t.Fatalf("seq %d after a failed signing, want 4", e.Seq)
	}
}

// wrongKey signs with another key than the one it names.
type wrongKey struct{ named, signs ed25519.PrivateKey }

func (w wrongKey) Public() crypto.PublicKey { return w.named.Public() }
func (w wrongKey) Sign(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	return w.signs.Sign(r, msg, opts)
}

func TestSignerThatSignsWithAnotherKeyWritesNothing(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	l, err := openAuditSigner(ctx, db, wrongKey{seededKey(1), seededKey(2)}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: "x"}); err == nil {
		t.Fatal("an entry signed with another key than the server key's was stored")
	}
	if got, err := l.Since(ctx, 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("Since: %v %d entries, want none", err, len(got))
	}
}
