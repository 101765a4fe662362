package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

func TestAppendSetsChainFields(t *testing.T) {
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, seededKey(1), Options{})
	first := mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed, Tool: "t", Args: []byte(`{"b":1, "a":2}`), Seq: 99, Hash: "x"})
	if first.Seq != 1 || first.PrevHash != strings.Repeat("0", 64) || len(first.Hash) != 64 || first.Sig == "" {
		t.Fatalf("first entry %+v", first)
	}
	if first.ArgsSHA256 == "" {
		t.Fatal("args_sha256 not computed")
	}
	second := mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed, Tool: "read_secret", Args: []byte(`{"name":"x"}`), ArgsRedact: true})
	if second.Seq != 2 || second.PrevHash != first.Hash {
		t.Fatalf("second entry does not link: %+v", second)
	}
	if second.Args != nil || second.ArgsSHA256 == "" {
		t.Fatalf("redacted args kept or digest lost: %+v", second)
	}
	got, err := l.Since(context.Background(), 0, 0)
	if err != nil || len(got) != 2 || got[1].Hash != second.Hash {
		t.Fatalf("Since: %v %+v", err, got)
	}

	for _, bad := range []Entry{
		{},
		{Kind: vocab.KindCallAllowed, Args: []byte(`{"a":`)},
		{Kind: vocab.KindCallAllowed, Args: []byte(`{"a":1}`), ArgsSHA256: strings.Repeat("0", 64)},
		{Kind: vocab.KindCallAllowed, Result: []byte(`1e400`)},
	} {
		if _, err := l.Append(context.Background(), bad); err == nil {
			t.Errorf("Append(%+v) succeeded", bad)
		}
	}
	// Bad entries consumed no seq.
	if e := mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed}); e.Seq != 3 {
		t.Fatalf("seq %d after rejected appends, want 3", e.Seq)
	}
}

func TestCloseWritesCheckpointAndReopenAppends(t *testing.T) {
	dir := t.TempDir()
	db := storetest.Open(t, dir)
	key := seededKey(1)
	l, err := openTest(context.Background(), db, key, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries()[:3] {
		mustAppend(t, l, e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), Entry{Kind: vocab.KindCallAllowed}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	var size int64
	if err := db.QueryRow(`SELECT MAX(size) FROM audit_checkpoints`).Scan(&size); err != nil || size != 3 {
		t.Fatalf("final checkpoint size %d (%v), want 3", size, err)
	}
	l2 := openLog(t, db, key, Options{})
	if e := mustAppend(t, l2, Entry{Kind: vocab.KindCallAllowed}); e.Seq != 4 {
		t.Fatalf("seq %d", e.Seq)
	}
}

func TestBackgroundCheckpoints(t *testing.T) {
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, seededKey(1), Options{CheckpointEvery: 5 * time.Millisecond})
	mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed})
	mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed})
	// Wait (without a timing assertion) for the ticker to sign size 2.
	for {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM audit_checkpoints WHERE size = 2`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Nothing new: no further checkpoint rows for the same size.
	msg1, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msg2, _ := l.Checkpoint(context.Background())
	if !bytes.Equal(msg1, msg2) {
		t.Fatal("an unchanged log got a new checkpoint")
	}
}

// With CallerCheckpoints the log signs nothing in the background; the
// caller's CheckpointLoop does, until its context ends.
func TestCallerCheckpointsRunOnlyInTheCallersLoop(t *testing.T) {
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, seededKey(1), Options{CheckpointEvery: time.Millisecond, CallerCheckpoints: true})
	mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed})
	count := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM audit_checkpoints`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Many of the log's own intervals pass: nothing is signed.
	time.Sleep(50 * time.Millisecond)
	if n := count(); n != 0 {
		t.Fatalf("%d checkpoints written without the caller's loop", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.CheckpointLoop(ctx, time.Millisecond) }()
	for count() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done // returns when its context ends
	mustAppend(t, l, Entry{Kind: vocab.KindCallAllowed})
	time.Sleep(20 * time.Millisecond)
	if n := count(); n != 1 {
		t.Fatalf("%d checkpoints after the caller's loop stopped, want 1", n)
	}
}

// openLogWith is a fresh log of entries, appended with the step clock.
func openLogWith(t *testing.T, key ed25519.PrivateKey, entries []Entry) *Log {
	t.Helper()
	l := openLog(t, storetest.Open(t, t.TempDir()), key, Options{Now: stepClock()})
	for _, e := range entries {
		mustAppend(t, l, e)
	}
	return l
}

func TestExportSincePastTheEnd(t *testing.T) {
	l := openLogWith(t, seededKey(1), sampleEntries()[:3])
	var buf bytes.Buffer
	err := l.Export(context.Background(), &buf, 4)
	var se *SinceError
	if !errors.As(err, &se) || se.Since != 4 || se.Last != 3 {
		t.Fatalf("Export --since 4 of 3 entries: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("refused export wrote %q", buf.Bytes())
	}
}

// A call's entry carries the hash of the policy that decided it, even
// when the call ends rejected or interrupted; only decisions (and
// policy.loaded) may name a policy, so Append keeps it there and drops it
// elsewhere, and stamps the policy in force on a decision that names none.
func TestOnlyDecisionsNameAPolicy(t *testing.T) {
	ctx := context.Background()
	l := openLogWith(t, seededKey(1), nil)
	loaded, err := l.LoadPolicy(ctx, json.RawMessage(`{"tools":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	decider := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		kind  vocab.Kind
		given string
		want  string
	}{
		{vocab.KindCallAllowed, decider, decider},
		{vocab.KindCallDenied, "", loaded.PolicySHA256},
		{vocab.KindCallRejected, decider, ""},
		{vocab.KindCallInterrupted, decider, ""},
	} {
		e, err := l.Append(ctx, Entry{Kind: tc.kind, Agent: "a", Tool: "t", PolicySHA256: tc.given})
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if e.PolicySHA256 != tc.want {
			t.Errorf("%s given %q: policy_sha256 %q, want %q", tc.kind, tc.given, e.PolicySHA256, tc.want)
		}
	}
}
