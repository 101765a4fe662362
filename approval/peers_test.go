package approval

import (
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
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
