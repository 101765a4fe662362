package guard

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// downOnRequest is a replica's audit log whose database stops just as it
// is to append a request's approval.requested: the request is stored,
// and then nothing can be written, nor the request ended.
type downOnRequest struct {
	*audit.Log
	t  *testing.T
	mu sync.Mutex
	up func()
}

func (d *downOnRequest) Append(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	d.mu.Lock()
	if e.Kind == vocab.KindApprovalRequested && d.up == nil {
		d.up = pgtest.Down(d.t)
	}
	d.mu.Unlock()
	return d.Log.Append(ctx, e)
}

// PostgreSQL stops while a replica raises a block-mode transfer's
// request: the request is stored, its caller told the call failed. The
// replica lives, so no reaper would end the request; once the database
// is back, the replica itself cancels it on the record, and its usage
// share is given back, once. The export verifies, with the request's
// approval.requested before its approval.cancelled.
// outageReplica is one replica on PostgreSQL deciding transfers on the
// shared windows, its approval service recording through wrap(log).
type outageReplica struct {
	db      *store.DB
	svc     *approval.Service
	g       *Guard
	log     *audit.Log
	key     ed25519.PrivateKey
	windows *store.UsageWindows
}

func newOutageReplica(t *testing.T, wrap func(*audit.Log) Recorder) *outageReplica {
	return newGatedOutageReplica(t, wrap, nil)
}

// newGatedOutageReplica is newOutageReplica whose guard cancels requests
// only once gate is closed (nil: at once).
func newGatedOutageReplica(t *testing.T, wrap func(*audit.Log) Recorder, gate chan struct{}) *outageReplica {
	t.Helper()
	ctx := context.Background()
	db := storetest.Connect(t, pgtest.URL(t))
	w := newWorldOn(t, db)
	pol, conf := usagePolicy(t, "block", "transfer")
	windows, amounts := sharedWindows(t, db)
	if err := w.cat.Replace("ledger", []*tools.Spec{payTo("Acme")}); err != nil {
		t.Fatal(err)
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	l, err := auditpg.Open(ctx, db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	rec := wrap(l)
	owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := approval.New(ctx, db, rec, approval.Options{RPID: "localhost", Origins: []string{origin},
		Approvers: []approval.Approver{{ID: "alice"}}, Owners: owners})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	var requests Requests = svc
	if gate != nil {
		requests = gatedCancel{svc, gate}
	}
	g := New(Options{Catalog: w.cat, Policy: pol, Audit: rec, History: l, Marks: store.Marks{DB: db},
		Requests: requests, Runs: svc, Recovery: svc, Tasks: svc, Tools: conf, SharedUsage: windows, Amounts: amounts})
	t.Cleanup(g.Close)
	if err := g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	return &outageReplica{db: db, svc: svc, g: g, log: l, key: key, windows: windows}
}

// cancelledOnce waits for the replica's one request to end, and checks
// it was cancelled, its share given back once, and the export verifies
// with its approval.requested before its approval.cancelled.
func (o *outageReplica) cancelledOnce(t *testing.T) {
	t.Helper()
	o.endedOnce(t, vocab.StateCancelled, vocab.KindApprovalRequested, vocab.KindApprovalCancelled)
}

// endedOnce waits for the replica's one request to end in state, its
// share given back once, and the export to verify with the request's
// entries of kinds, in order.
func (o *outageReplica) endedOnce(t *testing.T, want vocab.State, kinds ...vocab.Kind) {
	t.Helper()
	ctx := context.Background()
	var id string
	var state vocab.State
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := o.db.QueryRowContext(ctx, `SELECT id, state FROM approval_requests`).Scan(&id, &state)
		if err == nil && state != vocab.StatePending && state != vocab.StateApproved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the request nobody waits for, once the database is back: %s (%v), want it ended", state, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if state != want {
		t.Fatalf("the request nobody waits for ended %s, want %s", state, want)
	}
	waitSum(t, o.windows, "transfer", 0, 0, "its share given back")
	noRowBelowZero(t, o.db)

	var buf bytes.Buffer
	if err := o.log.Export(ctx, &buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(bytes.NewReader(buf.Bytes()), audit.PublicKeyText(o.key.Public().(ed25519.PublicKey)), verify.Options{}); err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	var got []vocab.Kind
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte{'\n'}) {
		var e audit.Entry
		if json.Unmarshal(line, &e) == nil && e.RequestID == id {
			got = append(got, e.Kind)
		}
	}
	if !slices.Equal(got, kinds) {
		t.Fatalf("the request's entries: %v, want %v", got, kinds)
	}
}

func TestARequestStoredAsTheDatabaseStopsIsCancelledOnceItIsBack(t *testing.T) {
	var rec *downOnRequest
	o := newOutageReplica(t, func(l *audit.Log) Recorder { rec = &downOnRequest{Log: l, t: t}; return rec })
	res := o.g.Handle(context.Background(), Call{Tool: "transfer", Agent: "bot", Args: map[string]any{"amount": 120.0}})
	if !res.IsError {
		t.Fatalf("a call whose request could not be recorded: %s, want an error", text(res))
	}
	if rec.up == nil {
		t.Fatal("the database never stopped: no request was raised")
	}
	rec.up()
	o.cancelledOnce(t)
}

// waitThroughOutage has a block-mode transfer wait for its request
// while PostgreSQL stops: the wait fails, and the call with it. It
// returns once the database is back.
func (o *outageReplica) waitThroughOutage(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	done := make(chan string, 1)
	go func() {
		res := o.g.Handle(ctx, Call{Tool: "transfer", Agent: "bot", Args: map[string]any{"amount": 120.0}})
		done <- fmt.Sprintf("error %v: %s", res.IsError, text(res))
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		// Raised, and its approval.requested appended and out of the
		// outbox: the wait is what the outage cuts.
		var n int
		if err := o.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM approval_requests) * 10 + (SELECT COUNT(*) FROM approval_outbox)`).Scan(&n); err == nil && n == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no request was raised")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantSum(t, o.windows, "transfer", 1, 120, "while the call waits")
	up := pgtest.Down(t)
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "error true") {
			t.Fatalf("the call whose wait lost the database: %s, want an error", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting call never noticed the database stopped")
	}
	up()
}

// PostgreSQL stops while a block-mode call waits for its request: the
// wait fails and the call with it. Once the database is back, the
// replica cancels the request nobody waits for, as above.
func TestARequestWhoseWaitFailsWithTheDatabaseIsCancelledOnceItIsBack(t *testing.T) {
	o := newOutageReplica(t, func(l *audit.Log) Recorder { return l })
	o.waitThroughOutage(t)
	o.cancelledOnce(t)
}

// gatedCancel is the approval service whose Cancel waits for gate.
type gatedCancel struct {
	*approval.Service
	gate chan struct{}
}

func (c gatedCancel) Cancel(ctx context.Context, id, reason string) error {
	<-c.gate
	return c.Service.Cancel(ctx, id, reason)
}

// A human approves the request nobody waits for before its replica's
// cancellation lands: nobody would run it, so the replica ends it as
// call.failed, not run, and gives its share back.
func TestARequestNobodyWaitsForApprovedBeforeItsCancellationFailsUnrun(t *testing.T) {
	gate := make(chan struct{})
	o := newGatedOutageReplica(t, func(l *audit.Log) Recorder { return l }, gate)
	alice := enroll(t, o.svc)
	o.waitThroughOutage(t)
	var id string
	if err := o.db.QueryRowContext(context.Background(), `SELECT id FROM approval_requests`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	(&world{t: t, alice: alice}).approve(&process{svc: o.svc}, id)
	close(gate)
	o.endedOnce(t, vocab.StateFailed, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallFailed)
}
