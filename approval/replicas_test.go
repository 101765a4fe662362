package approval

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"

	"github.com/countersign/countersign/approval/approvaltest"
)

// withRereadEvery sets the reread backstop for one test, so that a waiter
// that returns did so because it was told of the change.
func withRereadEvery(t *testing.T, d time.Duration) {
	old := rereadEvery
	rereadEvery = d
	t.Cleanup(func() { rereadEvery = old })
}

// Two replicas on one PostgreSQL database: a decision taken on B wakes
// the call waiting on A, and A's OnChange hooks (the guard's dispatcher,
// the page), with the reread backstop an hour away.
func TestDecisionOnOneReplicaWakesAnother(t *testing.T) {
	withRereadEvery(t, time.Hour)
	url := pgtest.URL(t)
	dir := t.TempDir()
	a := fixtureOn(t, dir, storetest.Connect(t, url))
	b := fixtureOn(t, dir, storetest.Connect(t, url))
	if a.db.Dialect() != store.PostgreSQL {
		t.Fatalf("dialect %v", a.db.Dialect())
	}
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	b.enroll(t, "alice", alice)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	heard := make(chan string, 16)
	a.svc.OnChange(func(id string) {
		select {
		case heard <- id:
		default:
		}
	})
	req, err := a.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for len(heard) > 0 {
		<-heard // A's own change
	}
	woke := make(chan *Request, 1)
	go func() {
		r, err := a.svc.Wait(ctx, req.ID)
		if err != nil {
			t.Error(err)
		}
		woke <- r
	}()
	if _, err := b.decide(t, req.ID, vocab.Approve, alice); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-woke:
		if r == nil || r.State != vocab.StateApproved {
			t.Fatalf("A's waiter returned %+v, want approved", r)
		}
	case <-ctx.Done():
		t.Fatal("A's waiter was not woken by B's decision")
	}
	for {
		select {
		case id := <-heard:
			if id == req.ID || id == "" {
				return
			}
		case <-ctx.Done():
			t.Fatal("A's OnChange hooks did not hear B's decision")
		}
	}
}
