package approval

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// A change one replica makes reaches the other replica's watchers (its
// waiting calls, dispatcher and pages) through the database, not only at
// their next reread: the hooks, which rereads never call, hear it.
func TestAChangeOnOneReplicaWakesTheOthersWatchers(t *testing.T) {
	url := pgtest.URL(t)
	a := fixtureOn(t, t.TempDir(), storetest.Connect(t, url))
	b := fixtureOn(t, t.TempDir(), storetest.Connect(t, url))
	heard := make(chan string, 64)
	a.svc.OnChange(func(id string) {
		select {
		case heard <- id:
		default:
		}
	})
	r, err := b.svc.Create(context.Background(), paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case id := <-heard:
			if id == r.ID || id == "" {
				return
			}
		case <-deadline:
			t.Fatal("replica A never heard of the request B created")
		}
	}
}

// A change is announced by the transaction that makes it, not after: a
// decision that A commits but cannot log (its audit log fails) still
// wakes B's watchers, which then find it not yet counted.
func TestAChangeIsAnnouncedWithItsCommit(t *testing.T) {
	url := pgtest.URL(t)
	dir := t.TempDir()
	a := fixtureOn(t, dir, storetest.Connect(t, url))
	b := fixtureOn(t, dir, storetest.Connect(t, url))
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	a.enroll(t, "alice", alice)
	req, err := a.svc.Create(context.Background(), paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	heard := make(chan string, 64)
	b.svc.OnChange(func(id string) {
		select {
		case heard <- id:
		default:
		}
	})
	a.rec.SetFail(true)
	if _, err := a.decide(t, req.ID, vocab.Approve, alice); !errors.Is(err, ErrRecord) {
		t.Fatalf("decision with the log down: %v, want ErrRecord", err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case id := <-heard:
			if id != req.ID {
				continue
			}
			if r, err := b.svc.Get(context.Background(), req.ID); err != nil || r.State != vocab.StatePending {
				t.Fatalf("B reads %+v (%v): an approval not in the log must not count", r, err)
			}
			return
		case <-deadline:
			t.Fatal("B never heard of the decision A committed")
		}
	}
}
