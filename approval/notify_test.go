package approval

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// event is one call of Options.Notify, with what the log held then.
type event struct {
	name   string
	req    Request
	logged []vocab.Kind
}

// observed wires Options.Notify to a channel.
func observed(f **fixture) (func(*Options), <-chan event) {
	ch := make(chan event, 16)
	return func(o *Options) {
		o.Notify = func(name string, r *Request) {
			ch <- event{name, *r, (*f).rec.Kinds(r.ID)}
		}
	}, ch
}

func next(t *testing.T, ch <-chan event) event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event in 10s")
		panic("unreachable")
	}
}

func none(t *testing.T, ch <-chan event) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("unexpected event %s for %s", e.name, e.req.ID)
	default:
	}
}

func TestNotifyAfterEachCommittedChange(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		var f *fixture
		tweak, events := observed(&f)
		f = fixtureOn(t, t.TempDir(), db, tweak)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		bob := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)

		nr := paymentRequest("alice", "bob")
		nr.Quorum = 2
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		e := next(t, events)
		if e.name != EventRequested || e.req.ID != req.ID || !slices.Equal(e.logged, []vocab.Kind{vocab.KindApprovalRequested}) {
			t.Fatalf("after Create: %s %s, log %v", e.name, e.req.ID, e.logged)
		}
		if got := e.req.Summary(); got != "Pay USD 500,000.00 from operating to Vendor X" {
			t.Errorf("Summary() = %q", got)
		}

		// The first of a quorum of two changes nothing anyone is told about.
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		none(t, events)
		if _, err := f.decide(t, req.ID, vocab.Approve, bob); err != nil {
			t.Fatal(err)
		}
		e = next(t, events)
		if e.name != EventApproved || e.req.State != vocab.StateApproved || e.req.DecidedBy != "alice,bob" ||
			!slices.Contains(e.logged, vocab.KindApprovalApproved) {
			t.Fatalf("after the quorum: %s state %s by %s, log %v", e.name, e.req.State, e.req.DecidedBy, e.logged)
		}
		none(t, events)

		req, err = f.svc.Create(ctx, paymentRequest("alice", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		next(t, events)
		if _, err := f.decide(t, req.ID, vocab.Deny, bob); err != nil {
			t.Fatal(err)
		}
		e = next(t, events)
		if e.name != EventDenied || e.req.DecidedBy != "bob" || !slices.Contains(e.logged, vocab.KindApprovalDenied) {
			t.Fatalf("after deny: %s by %s, log %v", e.name, e.req.DecidedBy, e.logged)
		}
		none(t, events)
	})
}

func TestExpiringIsAnnouncedOnceBeforeExpiry(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		var f *fixture
		tweak, events := observed(&f)
		f = fixtureOn(t, t.TempDir(), db, tweak)
		ctx := context.Background()
		nr := paymentRequest("alice")
		nr.Timeout = 2 * time.Second // announced in its last 400ms
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		next(t, events) // requested
		e := next(t, events)
		if e.name != EventExpiring || e.req.ID != req.ID || e.req.State != vocab.StatePending {
			t.Fatalf("got %s for %s in state %s", e.name, e.req.ID, e.req.State)
		}
		if slices.Contains(e.logged, vocab.KindApprovalExpired) {
			t.Fatal("announced as expiring after it expired")
		}
		for {
			r, _ := f.svc.Get(ctx, req.ID)
			if r.State == vocab.StateExpired {
				break
			}
			<-f.svc.watch.Any()
		}
		none(t, events)
		var n int
		if err := f.db.QueryRow(`SELECT COUNT(*) FROM approval_notified WHERE request_id = ?`, req.ID).Scan(&n); err != nil || n != 1 {
			t.Fatalf("claims %d (%v), want 1", n, err)
		}
	})
}

// Create returns while a notification receiver hangs: it starts after the
// receiver already holds one delivery, and returns before that receiver
// is released. The latencies are logged, not asserted.
func TestCreateDoesNotWaitForAHangingReceiver(t *testing.T) {
	entered := make(chan time.Time, 8)
	release := make(chan struct{})
	var released sync.Once
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- time.Now()
		<-release
	}))
	t.Cleanup(hang.Close)
	arrived := make(chan time.Time, 8)
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- time.Now()
	}))
	t.Cleanup(fast.Close)

	ctx := context.Background()
	measure := func(f *fixture) (took time.Duration, start time.Time) {
		start = time.Now()
		if _, err := f.svc.Create(ctx, paymentRequest("alice")); err != nil {
			t.Fatal(err)
		}
		return time.Since(start), start
	}
	wired := func(chans ...notify.Channel) *fixture {
		n := notify.New(notify.Options{Channels: chans, Timeout: time.Minute})
		t.Cleanup(n.Close)
		return newFixture(t, func(o *Options) {
			o.Notify = func(ev string, r *Request) {
				n.Notify(notify.Message{Event: ev, RequestID: r.ID, Summary: r.Summary(), Code: r.Code, URL: r.URL,
					ExpiresAt: r.ExpiresAt, Approvers: r.Approvers})
			}
		})
	}

	plain := newFixture(t)
	measure(plain) // warm up
	without, _ := measure(plain)

	withFast := wired(notify.Channel{Type: notify.Webhook, URL: fast.URL, Secret: "s"})
	measure(withFast)
	<-arrived
	fastTook, start := measure(withFast)
	toReceiver := (<-arrived).Sub(start)

	slow := wired(notify.Channel{Type: notify.Webhook, URL: hang.URL, Secret: "s"})
	// Runs before the notifier's Close, which waits for the held delivery.
	t.Cleanup(func() { released.Do(func() { close(release) }) })
	measure(slow)
	<-entered // the receiver now holds a delivery and does not answer
	hanging, start := measure(slow)
	select {
	case <-release:
		t.Fatal("released before Create returned")
	default:
	}
	if at := <-entered; at.Before(start) {
		t.Fatal("second delivery arrived before its Create started")
	}
	released.Do(func() { close(release) })
	t.Logf("Create: %s without notify, %s with a webhook (Create to receiver %s), %s with a hanging receiver",
		without, fastTook, toReceiver, hanging)
}
