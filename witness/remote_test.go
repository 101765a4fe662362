package witness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness/witnesstest"
)

func appendN(t *testing.T, l *audit.Log, n int) {
	t.Helper()
	for range n {
		if _, err := l.Append(context.Background(), audit.Entry{Kind: vocab.KindCallAllowed, Tool: "t"}); err != nil {
			t.Fatal(err)
		}
	}
}

func remoteFor(t *testing.T, w *witnesstest.Witness, l *audit.Log) *Remote {
	t.Helper()
	r, err := NewRemote(w.URL, w.VKey, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Against a real litewitness: the checkpoint is cosigned, verified and
// kept; later ones are sent with a consistency proof; a restored older
// copy of the database, or another history, is refused naming the size
// the witness holds; a witness that is down only lags, and catches up.
func TestLitewitnessCosignsAndCatchesRollback(t *testing.T) {
	ctx := context.Background()
	lw := witnesstest.Start(t)
	keys := t.TempDir()
	l := newLog(t, keys, "a", 3)
	lw.AddLog(audit.KeyName, l.PublicKey())
	r := remoteFor(t, lw, l)

	if err := r.Check(ctx); err != nil {
		t.Fatalf("first check: %v\n%s", err, lw.Log())
	}
	ws, err := l.LatestWitnessed(ctx)
	if err != nil || len(ws) != 1 || ws[0].Size != 3 || ws[0].Witness != lw.VKey {
		t.Fatalf("stored cosigned checkpoints %+v (%v)", ws, err)
	}
	if !strings.Contains(string(ws[0].Note), "— "+witnesstest.Name+" ") {
		t.Fatalf("the stored note carries no cosignature of %s:\n%s", witnesstest.Name, ws[0].Note)
	}

	// More entries: sent with a proof from 3; the witness moves on.
	appendN(t, l, 4)
	msg, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Submit(ctx, msg); err != nil {
		t.Fatalf("second checkpoint: %v\n%s", err, lw.Log())
	}
	if got := lw.Size(audit.KeyName); got != 7 {
		t.Fatalf("litewitness holds size %d, want 7", got)
	}
	if st := r.Status(); st.Cosigned != 7 || st.Behind() != 0 || st.Err != nil {
		t.Fatalf("status %+v", st)
	}

	// A fresh client (a restarted server) that knows nothing learns the
	// witness's size from its 409 and proves from there.
	appendN(t, l, 2)
	if err := remoteFor(t, lw, l).Check(ctx); err != nil {
		t.Fatalf("a client without state: %v", err)
	}
	if got := lw.Size(audit.KeyName); got != 9 {
		t.Fatalf("litewitness holds size %d, want 9", got)
	}

	// The database restored from an older copy: same key, same first
	// entries, fewer of them; nothing local remembers the newer tree.
	older := newLog(t, keys, "a", 3)
	err = remoteFor(t, lw, older).Check(ctx)
	var rb *RollbackError
	if !errors.As(err, &rb) || rb.Witnessed != 9 || rb.Log != 3 {
		t.Fatalf("a rolled-back log: %v", err)
	}
	for _, want := range []string{"tree size 9", "tree size 3", witnesstest.Name, "--accept-rollback"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	// Another history as long or longer: the witness refuses the proof.
	other := newLog(t, keys, "b", 12)
	if err := remoteFor(t, lw, other).Check(ctx); !errors.As(err, &rb) || !strings.Contains(err.Error(), "different history") {
		t.Fatalf("a rewritten log: %v", err)
	}

	// The witness goes down: submitting fails, the status lags.
	lw.Stop()
	appendN(t, l, 5)
	msg, err = l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Submit(ctx, msg); err == nil {
		t.Fatal("a stopped witness cosigned")
	}
	st := r.Status()
	if st.Latest != 14 || st.Behind() != 7 || st.Lag(time.Now()) <= 0 || st.Err == nil || st.Refused() {
		t.Fatalf("status of a stopped witness %+v", st)
	}
	// Back up: the loop sends the newest checkpoint and catches up.
	lw.Restart()
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Keep(kctx, 10*time.Millisecond, 50*time.Millisecond) }()
	for r.Status().Behind() != 0 || r.Status().Err != nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := lw.Size(audit.KeyName); got != 14 {
		t.Fatalf("after catching up litewitness holds %d, want 14", got)
	}
}

// A witness that does not know the log, or answers with a cosignature that
// does not verify with its configured key, is refused, not trusted.
func TestWitnessThatDoesNotKnowTheLogOrHasAnotherKeyIsRefused(t *testing.T) {
	ctx := context.Background()
	lw := witnesstest.Start(t)
	l := newLog(t, t.TempDir(), "a", 2)
	err := remoteFor(t, lw, l).Check(ctx)
	var rf *RefusedError
	if !errors.As(err, &rf) || rf.Status != 404 || !strings.Contains(err.Error(), "does not know this log") {
		t.Fatalf("unknown log: %v", err)
	}
	lw.AddLog(audit.KeyName, l.PublicKey())
	other := witnesstest.Start(t) // another witness key, same name
	r, err := NewRemote(lw.URL, other.VKey, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(ctx); err == nil || !strings.Contains(err.Error(), "cosignature") {
		t.Fatalf("a cosignature under another key: %v", err)
	}
	if ws, _ := l.LatestWitnessed(ctx); len(ws) != 0 {
		t.Fatalf("kept an unverified cosignature: %+v", ws)
	}
}
