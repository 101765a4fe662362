package approval

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// inFiles names the database's files (the main file and its WAL, read as
// they are on disk) that hold needle. On PostgreSQL, whose files are the
// server's, it names the stored results that hold it.
func inFiles(t *testing.T, f *fixture, needle []byte) []string {
	t.Helper()
	var where []string
	if f.db.Dialect() == store.PostgreSQL {
		rows, err := f.db.Query(`SELECT id, result FROM approval_requests WHERE result IS NOT NULL`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var b []byte
			if err := rows.Scan(&id, &b); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, needle) {
				where = append(where, "the result of "+id)
			}
		}
		return where
	}
	dir := f.dir
	for _, name := range []string{store.FileName, store.FileName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, needle) {
			where = append(where, name)
		}
	}
	return where
}

// checkpoint moves SQLite's WAL into the main file, so inFiles reads what
// stays on disk; PostgreSQL has no WAL of ours to move.
func checkpoint(t *testing.T, f *fixture) {
	t.Helper()
	if f.db.Dialect() != store.SQLite {
		return
	}
	if _, err := f.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
}

func TestResultsAreSealedAtRestAndErasedAfterTheirWindow(t *testing.T) {
	ctx := context.Background()
	_, server, _ := ed25519.GenerateKey(rand.Reader)
	key, err := sealed.DeriveKey(server)
	if err != nil {
		t.Fatal(err)
	}
	clock := approvaltest.NewClock(time.Now())
	f := newFixture(t, func(o *Options) { o.ResultKey, o.ResultTTL, o.Now = key, time.Hour, clock.Now })
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	f.enroll(t, "alice", alice)
	secret := []byte("hunter2-c0rrect-h0rse-b4ttery")
	result := []byte(`{"name":"db_password","value":"` + string(secret) + `"}`)

	ran := func() string {
		t.Helper()
		req, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted, Result: result}); err != nil {
			t.Fatal(err)
		}
		return req.ID
	}
	id := ran()

	got, err := f.svc.Get(ctx, id)
	if err != nil || !bytes.Equal(got.Result, result) || !got.ResultUntil.Equal(clock.Now().Add(time.Hour).Truncate(0).UTC()) {
		t.Fatalf("result %s until %v (%v), want it kept for an hour", got.Result, got.ResultUntil, err)
	}
	if where := inFiles(t, f, secret); len(where) > 0 {
		t.Fatalf("the secret is in plain text in %v while it is kept", where)
	}
	checkpoint(t, f)
	if where := inFiles(t, f, secret); len(where) > 0 {
		t.Fatalf("the secret is in plain text in %v after a checkpoint", where)
	}

	t.Run("another process with the server's key can hand it over; without it, nothing", func(t *testing.T) {
		same, err := New(ctx, f.db, f.rec, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers,
			ResultKey: key, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer same.Close()
		if r, _ := same.Get(ctx, id); !bytes.Equal(r.Result, result) {
			t.Errorf("with the key: %s", r.Result)
		}
		other, err := New(ctx, f.db, f.rec, Options{RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if r, _ := other.Get(ctx, id); r.Result != nil || r.State != vocab.StateExecuted {
			t.Errorf("without the key: %s %s", r.State, r.Result)
		}
	})

	t.Run("a result moved to another request does not open", func(t *testing.T) {
		second := ran()
		if _, err := f.db.ExecContext(ctx, `UPDATE approval_requests SET result = (SELECT result FROM approval_requests WHERE id = ?) WHERE id = ?`,
			id, second); err != nil {
			t.Fatal(err)
		}
		if r, _ := f.svc.Get(ctx, second); r.Result != nil {
			t.Errorf("moved result opened: %s", r.Result)
		}
	})

	t.Run("a plain result an older version left is never shown and is erased", func(t *testing.T) {
		old := ran()
		if _, err := f.db.ExecContext(ctx, `UPDATE approval_requests SET result = ? WHERE id = ?`, result, old); err != nil {
			t.Fatal(err)
		}
		if r, _ := f.svc.Get(ctx, old); r.Result != nil {
			t.Errorf("plain result shown: %s", r.Result)
		}
		if _, err := f.svc.EraseResults(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_requests WHERE id = ? AND result IS NULL`, old).Scan(&n)
		if n != 1 {
			t.Error("the plain result was not erased")
		}
		checkpoint(t, f)
		if where := inFiles(t, f, secret); len(where) > 0 {
			t.Errorf("the erased plain result lingers in %v", where)
		}
	})

	t.Run("past the window it is gone, and the sweep erases it", func(t *testing.T) {
		if n, err := f.svc.EraseResults(ctx); err != nil || n != 0 {
			t.Fatalf("erased %d within the window (%v)", n, err)
		}
		clock.Add(time.Hour)
		r, _ := f.svc.Get(ctx, id)
		if r.Result != nil || r.ResultUntil.IsZero() || r.State != vocab.StateExecuted {
			t.Fatalf("past the window: %s %s until %v", r.State, r.Result, r.ResultUntil)
		}
		if n, err := f.svc.EraseResults(ctx); err != nil || n == 0 {
			t.Fatalf("erased %d (%v)", n, err)
		}
		var left int
		f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_requests WHERE result IS NOT NULL`).Scan(&left)
		if left != 0 {
			t.Errorf("%d results left after the window", left)
		}
	})
}
