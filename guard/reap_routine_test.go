package guard

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Three replicas on one PostgreSQL database, each with its own audit
// writer: one dies (its row stays, its lock is free) with a routine call
// allowed and no outcome, one lives with a routine call in flight. The
// reaper gives the dead one's call exactly one outcome, in its place,
// leaves the live one's alone, and reaping again adds nothing. The dead
// replica, fenced, appends nothing more; the export verifies.
func TestReapSettlesADeadReplicasRoutineCallsOnce(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, pgtest.URL(t))
	w := newWorldOn(t, db)
	w.policy.d = authz.Decision{Level: vocab.LevelLow}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	owners := deadReplicaOwners(t, db)
	release, err := owners.Hold("live-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	replica := noteReplicas(t, w, db, key)
	dead, _ := replica("dead-1", nil)
	live, _ := replica("live-1", nil)

	hold := w.book.holdRuns(t)
	t.Cleanup(hold)
	calls := make(chan struct{}, 2)
	for i, g := range []*Guard{dead, live} {
		go func() {
			g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": []string{"dead", "live"}[i]}})
			calls <- struct{}{}
		}()
	}
	for _, owner := range []string{"dead-1", "live-1"} {
		waitOwned(t, db, owner, 1)
	}
	// Its peers tell it dead (and fence it) once its row is a grace old
	// on a server up at least that long.
	svc := reaperService(t, w, db, owners)
	reaper, log := replica("reaper-1", svc)
	for range 2 {
		if err := reaper.Reap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	outcomes := routineOutcomes(t, log, key)
	if n := len(outcomes); n != 2 {
		t.Fatalf("after reaping: %d routine calls allowed, want 2", n)
	}
	if got := outcomes["dead"]; len(got) != 1 || !strings.HasPrefix(got[0], string(vocab.KindCallFailed)+" "+noteNeverRan) {
		t.Fatalf("the dead replica's call has outcomes %q, want the reaper's one call.failed (it had not run)", got)
	}
	if got := outcomes["live"]; len(got) != 0 {
		t.Fatalf("the reaper settled the live replica's call in flight: %v", got)
	}

	hold()
	<-calls
	<-calls
	if err := reaper.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	outcomes = routineOutcomes(t, log, key)
	if got := outcomes["dead"]; len(got) != 1 || !strings.HasPrefix(got[0], string(vocab.KindCallFailed)+" "+noteNeverRan) {
		t.Fatalf("the dead replica's call, once its run ended: outcomes %q, want only the reaper's (it was fenced)", got)
	}
	// Its held run failed ("released"): its own outcome, not the reaper's.
	if got := outcomes["live"]; len(got) != 1 || got[0] != string(vocab.KindCallFailed)+" released" {
		t.Fatalf("the live replica's call has outcomes %q, want its own one", got)
	}
}

// routineOutcomes exports l, checks the export verifies, and returns the
// outcomes of each routine call ("kind reason"), by its note argument.
func routineOutcomes(t *testing.T, l *audit.Log, key ed25519.PrivateKey) map[string][]string {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(bytes.NewReader(buf.Bytes()), audit.PublicKeyText(key.Public().(ed25519.PublicKey)), verify.Options{}); err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	note := map[int64]string{}
	out := map[string][]string{}
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte{'\n'}) {
		var e audit.Entry
		if json.Unmarshal(line, &e) != nil || e.Seq == 0 || e.RequestID != "" {
			continue
		}
		switch e.Kind {
		case vocab.KindCallAllowed:
			var args struct{ Note string }
			json.Unmarshal(e.Args, &args)
			note[e.Seq] = args.Note
			out[args.Note] = nil
		case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
			n := note[e.ArgsSeq]
			out[n] = append(out[n], string(e.Kind)+" "+e.Reason)
		}
	}
	return out
}

// noteReplicas returns what starts a replica of w on db with its own
// audit writer under owner, taking routine notes, and recovering through
// recovery (nil: none).
func noteReplicas(t *testing.T, w *world, db *store.DB, key ed25519.PrivateKey) func(owner string, recovery Recovery) (*Guard, *audit.Log) {
	return func(owner string, recovery Recovery) (*Guard, *audit.Log) {
		t.Helper()
		ctx := context.Background()
		l, err := auditpg.Open(ctx, db, key, audit.Options{Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		g := New(Options{Catalog: w.cat, Policy: w.policy, Audit: l, History: l, Marks: store.Marks{DB: db},
			Recovery: recovery, Owner: owner, Owned: auditpg.Owned{DB: db}, Tools: map[string]config.Tool{}})
		t.Cleanup(g.Close)
		if err := g.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		return g, l
	}
}

// deadReplicaOwners are db's owners, told dead fast, with a replica
// dead-1 that died long ago: its row, last stamped a minute ago, and no
// lock (as a killed process leaves them). Nobody asks whether it lives
// until the test does.
func deadReplicaOwners(t *testing.T, db *store.DB) *store.Owners {
	t.Helper()
	ctx := context.Background()
	owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{Heartbeat: 200 * time.Millisecond, Grace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO replicas (id, seen_at) VALUES ('dead-1', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	return owners
}

// reaperService waits until owners tell dead-1 dead (fencing it) and
// returns an approval service that acts for the dead.
func reaperService(t *testing.T, w *world, db *store.DB, owners *store.Owners) *approval.Service {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !owners.Dead("dead-1"); {
		if time.Now().After(deadline) {
			t.Fatal("the replica that died is never told dead")
		}
		time.Sleep(100 * time.Millisecond)
	}
	svc, err := approval.New(context.Background(), db, w.log, approval.Options{RPID: "localhost", Origins: []string{origin},
		Approvers: []approval.Approver{{ID: "alice"}}, Owners: owners})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// waitOwned waits until owner has appended n entries.
func waitOwned(t *testing.T, db *store.DB, owner string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		seqs, err := auditpg.Owned{DB: db}.Owned(context.Background(), owner, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s appended %d entries, want %d", owner, len(seqs), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// markOf reads the routine-call mark of owner, and whether it exists.
func markOf(t *testing.T, db *store.DB, owner string) (int64, bool) {
	t.Helper()
	v, ok, err := store.Marks{DB: db}.Mark(context.Background(), RoutineMark(owner))
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}

// A dead replica leaves a routine call open. While it is open, the
// reaper's forgetting keeps the replica's row and its routine-call mark
// (the next reap settles the call from the mark); once the reap settled
// it, forgetting deletes both, in one transaction, and reaping again
// finds nothing to do and writes no mark back.
func TestForgettingADeadReplicaDeletesItsRoutineMarkOnceItsCallsAreSettled(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, pgtest.URL(t))
	w := newWorldOn(t, db)
	w.policy.d = authz.Decision{Level: vocab.LevelLow}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	owners := deadReplicaOwners(t, db)
	replica := noteReplicas(t, w, db, key)
	dead, _ := replica("dead-1", nil)
	if _, ok := markOf(t, db, "dead-1"); !ok {
		t.Fatal("a replica that started has no routine-call mark")
	}
	hold := w.book.holdRuns(t)
	called := make(chan struct{})
	go func() {
		defer close(called)
		dead.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "dead"}})
	}()
	waitOwned(t, db, "dead-1", 1)
	svc := reaperService(t, w, db, owners)
	reaper, log := replica("reaper-1", svc)
	owners.AlsoForget(auditpg.Owned{DB: db}.ForgetMark(RoutineMark)) // as the daemon wires it

	// Its call is still open: neither its row nor its mark may go.
	if gone, err := svc.ForgetReplicas(ctx, []string{"dead-1"}); err != nil || len(gone) != 0 {
		t.Fatalf("forgetting a dead replica with a routine call open: forgot %v (%v), want nothing", gone, err)
	}
	if _, ok := markOf(t, db, "dead-1"); !ok {
		t.Fatal("the mark of a dead replica with a routine call open was deleted")
	}

	if err := reaper.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	// Its held run ends; fenced, it records nothing.
	hold()
	<-called
	if got := routineOutcomes(t, log, key)["dead"]; len(got) != 1 {
		t.Fatalf("the dead replica's call after the reap: outcomes %q, want the reaper's one", got)
	}
	if gone, err := svc.ForgetReplicas(ctx, []string{"dead-1"}); err != nil || len(gone) != 1 {
		t.Fatalf("forgetting a dead replica whose calls are settled: forgot %v (%v), want it", gone, err)
	}
	if v, ok := markOf(t, db, "dead-1"); ok {
		t.Fatalf("the forgotten replica's routine-call mark is still there (at %d)", v)
	}
	var rows int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM replicas WHERE id = 'dead-1'`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("the forgotten replica's row: %d (%v)", rows, err)
	}
	if err := reaper.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := markOf(t, db, "dead-1"); ok {
		t.Fatal("reaping after the forget wrote the forgotten replica's mark back")
	}
}
