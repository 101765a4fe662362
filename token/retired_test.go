package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"
)

// A token signed before the server key was rotated verifies against the
// new server's key set for its whole lifetime, and the retired key leaves
// the set once no token it signed can still be valid.
func TestTokenSignedBeforeRotationVerifiesDuringItsLifetime(t *testing.T) {
	old := newSigner(t) // signs at testNow
	raw, err := old.Sign(sampleClaims())
	if err != nil {
		t.Fatal(err)
	}
	_, server, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := DeriveKey(server)
	if err != nil {
		t.Fatal(err)
	}
	rotated := testNow.Add(time.Minute)
	now := rotated
	retired := old.priv.Public().(ed25519.PublicKey)
	next, err := NewSigner(key, old.Issuer(), SignerOptions{Now: func() time.Time { return now },
		Retired: []RetiredKey{{Public: retired, Until: rotated.Add(MaxLifetime)}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(next.JWKS().Keys) != 2 {
		t.Fatalf("key set after the rotation has %d keys, want the new and the retired one", len(next.JWKS().Keys))
	}
	opts := VerifyOptions{Issuer: next.Issuer(), Audience: "ci-bot", Now: func() time.Time { return testNow.Add(MaxLifetime - time.Second) }}
	if _, err := Verify(raw, next.JWKS(), opts); err != nil {
		t.Fatalf("a token signed before the rotation, within its lifetime: %v", err)
	}
	fresh, err := next.Sign(sampleClaims())
	if err != nil {
		t.Fatal(err)
	}
	opts.Now = func() time.Time { return now }
	if _, err := Verify(fresh, next.JWKS(), opts); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	now = rotated.Add(MaxLifetime)
	if keys := next.JWKS().Keys; len(keys) != 1 || keys[0].KeyID != next.KeyID() {
		t.Fatalf("key set once every old token expired: %d keys, want the new one alone", len(keys))
	}
}
