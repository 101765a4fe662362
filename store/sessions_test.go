package store_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A session begun on A is read on B until it expires; an expired row is
// deleted when the next session begins.
func TestSignInSessionsAreSharedAndExpire(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, a, b *store.DB) {
		ctx := context.Background()
		sa, err := store.OpenSignInSessions(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := store.OpenSignInSessions(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		tok := sha256.Sum256([]byte("cookie"))
		if err := sa.StartSession(ctx, tok, "alice", nil, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if who, id, ok, err := sb.Session(ctx, tok, now); err != nil || !ok || who != "alice" || id != nil {
			t.Fatalf("on B: %q %v %v", who, ok, err)
		}
		if _, _, ok, _ := sb.Session(ctx, tok, now.Add(time.Minute)); ok {
			t.Fatal("an expired session is still one")
		}
		if _, _, ok, _ := sb.Session(ctx, sha256.Sum256([]byte("other")), now); ok {
			t.Fatal("an unknown cookie is a session")
		}
		old := sha256.Sum256([]byte("old"))
		if err := sa.StartSession(ctx, old, "bob", nil, now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		carol := sha256.Sum256([]byte("new"))
		if err := sb.StartSession(ctx, carol, "carol", []byte(`{"sub":"carol"}`), now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if who, id, ok, err := sa.Session(ctx, carol, now); err != nil || !ok || who != "carol" || string(id) != `{"sub":"carol"}` {
			t.Fatalf("carol's session through the identity provider on A: %q %s %v %v", who, id, ok, err)
		}
		var n int
		a.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_sessions`).Scan(&n)
		if n != 2 {
			t.Fatalf("%d rows, want alice's and carol's (bob's expired)", n)
		}
	})
}
