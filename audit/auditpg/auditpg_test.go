package auditpg

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/torchwood"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/note"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

func seededKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

func openLog(t testing.TB, db *store.DB, key ed25519.PrivateKey, opts audit.Options) *audit.Log {
	t.Helper()
	l, err := Open(context.Background(), db, key, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// routine is a routine call's entry: it needs no other to verify.
func routine(i int) audit.Entry {
	return audit.Entry{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "transfer", Decision: "low",
		Args: json.RawMessage(fmt.Sprintf(`{"amount":%d,"to":"Vendor %d"}`, i, i%7))}
}

func mustAppend(t testing.TB, l *audit.Log, e audit.Entry) audit.Entry {
	t.Helper()
	out, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append %s: %v", e.Kind, err)
	}
	return out
}

// verified exports l and checks the export as an auditor would
// (countersign audit verify), returning its entries.
func verified(t *testing.T, l *audit.Log, key ed25519.PrivateKey) []audit.Entry {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, 0); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if _, err := verify.Export(bytes.NewReader(buf.Bytes()), audit.PublicKeyText(key.Public().(ed25519.PublicKey)), verify.Options{}); err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	var out []audit.Entry
	for _, line := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte{'\n'}) {
		var e audit.Entry
		if err := json.Unmarshal(line, &e); err == nil && e.Seq > 0 {
			out = append(out, e)
		}
	}
	return out
}

// The log's storage behaviours, the same on both dialects.
func TestLogOnBothDialects(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		key := seededKey(1)
		l, err := Open(ctx, db, key, audit.Options{Owner: "replica-a"})
		if err != nil {
			t.Fatal(err)
		}
		first := mustAppend(t, l, routine(1))
		if first.Seq != 1 || first.PrevHash != strings.Repeat("0", 64) {
			t.Fatalf("first entry %+v", first)
		}
		second := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallInterrupted, Agent: "agent-1", Tool: "transfer", ArgsSeq: 1,
			ArgsSHA256: first.ArgsSHA256, Decision: "low", Reason: "outcome unknown: server stopped"})
		if second.Seq != 2 || second.PrevHash != first.Hash {
			t.Fatalf("second entry does not link: %+v", second)
		}
		if _, err := l.Append(ctx, audit.Entry{}); err == nil {
			t.Fatal("an entry without a kind was appended")
		}
		got, err := l.Since(ctx, 0, 0)
		if err != nil || len(got) != 2 || got[1].Hash != second.Hash {
			t.Fatalf("Since: %v %+v", err, got)
		}
		if last, err := l.LastSeq(ctx); err != nil || last != 2 {
			t.Fatalf("LastSeq %d, %v", last, err)
		}
		if in, err := l.Interrupted(ctx); err != nil || len(in) != 1 || in[0].Seq != 2 {
			t.Fatalf("Interrupted: %+v, %v", in, err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, routine(3)); !errors.Is(err, audit.ErrClosed) {
			t.Fatalf("Append after Close: %v", err)
		}
		var size int64
		if err := db.QueryRow(`SELECT MAX(size) FROM audit_checkpoints`).Scan(&size); err != nil || size != 2 {
			t.Fatalf("final checkpoint size %d (%v), want 2", size, err)
		}

		// Reopened, the stored log checks and the chain goes on.
		l2 := openLog(t, db, key, audit.Options{})
		if e := mustAppend(t, l2, routine(3)); e.Seq != 3 || e.PrevHash != second.Hash {
			t.Fatalf("after reopening: %+v", e)
		}
		if got := verified(t, l2, key); len(got) != 3 {
			t.Fatalf("export holds %d entries, want 3", len(got))
		}
		if _, err := l2.TreeHash(ctx, 2); err != nil {
			t.Fatal(err)
		}
		proof, err := l2.ConsistencyProof(ctx, 2, 3)
		if err != nil || len(proof) == 0 {
			t.Fatalf("ConsistencyProof: %v %v", proof, err)
		}

		// A stored line changed behind the log's back is found at Open,
		// and that Log refuses appends.
		if _, err := db.Exec(`UPDATE audit_entries SET body = REPLACE(body, 'Vendor 3', 'Vendor 9') WHERE seq = 3`); err != nil {
			t.Fatal(err)
		}
		l3, err := Open(ctx, db, key, audit.Options{})
		var te *audit.TamperError
		if !errors.As(err, &te) || te.Seq != 3 {
			t.Fatalf("Open of a tampered log: %v", err)
		}
		defer l3.Close()
		if _, err := l3.Append(ctx, routine(4)); !errors.As(err, &te) {
			t.Fatalf("Append on a tampered log: %v", err)
		}
	})
}

// openWith opens a log in db, a PostgreSQL database, with a Backend
// the test can reach.
func openWith(t *testing.T, db *store.DB, key ed25519.PrivateKey, opts audit.Options) (*audit.Log, *Backend) {
	t.Helper()
	b, err := New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	opts.Backend = b
	l, err := audit.Open(context.Background(), db.DB, key, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, b
}

// twoReplicas is one PostgreSQL database and a Log on each of two
// connections to it, as two servers have.
func twoReplicas(t *testing.T, key ed25519.PrivateKey, optsA, optsB audit.Options) (a, b *audit.Log, ba, bb *Backend, db *store.DB) {
	t.Helper()
	url := pgtest.URL(t)
	dbA, dbB := storetest.Connect(t, url), storetest.Connect(t, url)
	optsA.Owner, optsB.Owner = "replica-a", "replica-b"
	a, ba = openWith(t, dbA, key, optsA)
	b, bb = openWith(t, dbB, key, optsB)
	return a, b, ba, bb, dbA
}

func TestTwoReplicasOneChain(t *testing.T) {
	key := seededKey(2)
	a, b, ba, bb, db := twoReplicas(t, key, audit.Options{}, audit.Options{})
	const writers, each = 64, 20
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range writers {
		l := a
		if w%2 == 1 {
			l = b
		}
		wg.Go(func() {
			for i := range each {
				if _, err := l.Append(context.Background(), routine(w*each+i)); err != nil {
					failed.Add(1)
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	const n = writers * each
	var count, maxSeq int64
	if err := db.QueryRow(`SELECT COUNT(*), MAX(seq) FROM audit_entries`).Scan(&count, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if count != n || maxSeq != n {
		t.Fatalf("%d entries up to seq %d, want %d without gaps", count, maxSeq, n)
	}
	var owners int
	if err := db.QueryRow(`SELECT COUNT(DISTINCT owner) FROM audit_entries`).Scan(&owners); err != nil || owners != 2 {
		t.Fatalf("%d owners (%v), want 2", owners, err)
	}
	for _, l := range []*audit.Log{a, b} {
		if got := verified(t, l, key); len(got) != n {
			t.Fatalf("an export holds %d entries, want %d", len(got), n)
		}
	}
	sa, sb := ba.Stats(), bb.Stats()
	if sa.Entries+sb.Entries != n {
		t.Fatalf("the writers stored %d+%d entries, want %d", sa.Entries, sb.Entries, n)
	}
	t.Logf("a: %+v; b: %+v", sa, sb)
}

// A Log whose head another replica moved chains onto the moved head.
func TestHeadMovedByTheOtherLog(t *testing.T) {
	key := seededKey(3)
	a, b, ba, _, _ := twoReplicas(t, key, audit.Options{}, audit.Options{})
	a1 := mustAppend(t, a, routine(1))
	b1 := mustAppend(t, b, routine(2))
	a2 := mustAppend(t, a, routine(3))
	if b1.Seq != 2 || b1.PrevHash != a1.Hash || a2.Seq != 3 || a2.PrevHash != b1.Hash {
		t.Fatalf("the chain forks: %d<-%d<-%d", a1.Seq, b1.Seq, a2.Seq)
	}
	if moved := ba.Stats().Moved; moved != 1 {
		t.Fatalf("a's writer found the head moved %d times, want 1", moved)
	}
}

func goAppend(t *testing.T, l *audit.Log, e audit.Entry) <-chan audit.Entry {
	out := make(chan audit.Entry, 1)
	go func() {
		e, err := l.Append(context.Background(), e)
		if err != nil {
			t.Error(err)
		}
		out <- e
	}()
	return out
}

// A batch the Log sealed ahead, onto the head its COMMIT in flight would
// leave, is sealed again when another replica appended in between.
func TestPresealedBatchResealed(t *testing.T) {
	key := seededKey(8)
	url := pgtest.URL(t)
	dbA, dbB := storetest.Connect(t, url), storetest.Connect(t, url)
	sealing := make(chan struct{}, 64)
	now := func() time.Time {
		sealing <- struct{}{}
		return time.Now()
	}
	a, ba := openWith(t, dbA, key, audit.Options{Now: now})
	b, _ := openWith(t, dbB, key, audit.Options{})
	mustAppend(t, a, routine(1))
	<-sealing

	committing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ba.beforeCommit = func(*pgx.Conn) {
		once.Do(func() {
			close(committing)
			<-release
		})
	}
	a2 := goAppend(t, a, routine(2))
	<-sealing
	<-committing // a holds the head; its COMMIT waits
	a3 := goAppend(t, a, routine(3))
	<-sealing // sealed ahead onto the head a's COMMIT will leave
	b1 := goAppend(t, b, routine(4))
	// b waits for the head's lock (and not for any other lock: only a
	// statement on audit_head counts), so it takes the head before a's
	// next batch asks.
	for n := 0; n == 0; {
		if err := dbA.QueryRow(`SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() AND query LIKE '%audit_head%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	e2, eb, e3 := <-a2, <-b1, <-a3
	// Usually b, which was waiting, takes the head first and a's batch,
	// sealed ahead onto the head a's COMMIT left, is sealed again onto b's.
	// PostgreSQL does not promise a waiter the row before a newcomer, and
	// on a loaded machine a's next batch can win the lock: then it goes on
	// the head it was sealed for, and b follows. Either way: one chain.
	switch {
	case e2.Seq == 2 && eb.Seq == 3 && eb.PrevHash == e2.Hash && e3.Seq == 4 && e3.PrevHash == eb.Hash:
	case e2.Seq == 2 && e3.Seq == 3 && e3.PrevHash == e2.Hash && eb.Seq == 4 && eb.PrevHash == e3.Hash:
		t.Log("a's next batch took the head before b: not resealed this run")
	default:
		t.Fatalf("chain %d <- %d (b) <- %d", e2.Seq, eb.Seq, e3.Seq)
	}
	if len(verified(t, a, key)) != 4 {
		t.Fatal("the export does not hold 4 entries")
	}
}

// A writer whose connection dies mid-batch fails that batch's appends
// (nothing of it is stored) and the next append reconnects.
func TestConnectionKilledMidBatch(t *testing.T) {
	key := seededKey(4)
	url := pgtest.URL(t)
	db := storetest.Connect(t, url)
	l, b := openWith(t, db, key, audit.Options{})
	mustAppend(t, l, routine(1))
	var once sync.Once
	b.beforeCommit = func(conn *pgx.Conn) {
		once.Do(func() {
			var ok bool
			if err := db.QueryRow(`SELECT pg_terminate_backend(?)`, conn.PgConn().PID()).Scan(&ok); err != nil || !ok {
				t.Errorf("pg_terminate_backend: %v %v", ok, err)
			}
		})
	}
	if _, err := l.Append(context.Background(), routine(2)); err == nil {
		t.Fatal("an append whose connection was killed succeeded")
	}
	e := mustAppend(t, l, routine(3))
	if e.Seq != 2 {
		t.Fatalf("the next append got seq %d, want 2", e.Seq)
	}
	entries := verified(t, l, key)
	if len(entries) != 2 || !strings.Contains(string(entries[1].Args), `"amount":3`) {
		t.Fatalf("the log holds %+v", entries)
	}
}

// A writer's connection ended while it sat idle (a PostgreSQL restart
// ends every session) is replaced on the next append, which succeeds:
// the first call after a restart is not refused for want of a log.
func TestIdleConnectionEndedBetweenAppends(t *testing.T) {
	key := seededKey(9)
	db := storetest.Connect(t, pgtest.URL(t))
	l, b := openWith(t, db, key, audit.Options{})
	mustAppend(t, l, routine(1))
	var ok bool
	if err := db.QueryRow(`SELECT pg_terminate_backend(?)`, b.conn.PgConn().PID()).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	if e := mustAppend(t, l, routine(2)); e.Seq != 2 {
		t.Fatalf("the append after the connection ended got seq %d, want 2", e.Seq)
	}
	if entries := verified(t, l, key); len(entries) != 2 {
		t.Fatalf("the log holds %d entries, want 2", len(entries))
	}
}

// Replicas whose clocks disagree never make time go backwards along the
// chain.
func TestClockSkewKeepsTimeInOrder(t *testing.T) {
	key := seededKey(5)
	behind := func() time.Time { return time.Now().Add(-time.Hour) }
	a, b, _, _, _ := twoReplicas(t, key, audit.Options{}, audit.Options{Now: behind})
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		mustAppend(t, l, routine(i))
	}
	entries := verified(t, a, key)
	for i := 1; i < len(entries); i++ {
		if entries[i].Time < entries[i-1].Time {
			t.Fatalf("seq %d at %s follows %s", entries[i].Seq, entries[i].Time, entries[i-1].Time)
		}
	}
}

// Opening a log while another replica appends reads one snapshot: no
// false TamperError.
func TestOpenWhilePeersAppend(t *testing.T) {
	key := seededKey(6)
	url := pgtest.URL(t)
	a := openLog(t, storetest.Connect(t, url), key, audit.Options{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := a.Append(context.Background(), routine(w*100000+i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	dbB := storetest.Connect(t, url)
	for range 20 {
		l, err := Open(context.Background(), dbB, key, audit.Options{})
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("Open while a peer appends: %v", err)
		}
		l.Close()
	}
	close(stop)
	wg.Wait()
}

// A head that does not match the entries is tampering.
func TestHeadDiffersFromEntries(t *testing.T) {
	key := seededKey(7)
	db := storetest.Connect(t, pgtest.URL(t))
	l := openLog(t, db, key, audit.Options{})
	for i := range 3 {
		mustAppend(t, l, routine(i))
	}
	l.Close()
	if _, err := db.Exec(`UPDATE audit_head SET seq = 2`); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), db, key, audit.Options{})
	var te *audit.TamperError
	if !errors.As(err, &te) || !strings.Contains(te.Reason, "head") {
		t.Fatalf("Open with a moved-back head: %v", err)
	}
}

// A writer that stops between locking the head and committing (a host
// paused or gone) loses its session after IdleInTransaction, and with it
// the lock: the other replica appends, the stopped one's batch fails.
func TestStalledWriterReleasesTheChain(t *testing.T) {
	key := seededKey(9)
	a, b, ba, _, _ := twoReplicas(t, key, audit.Options{}, audit.Options{})
	mustAppend(t, a, routine(1))
	stalled, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ba.beforeCommit = func(conn *pgx.Conn) {
		once.Do(func() {
			for name, want := range map[string]string{"idle_in_transaction_session_timeout": "2s", "lock_timeout": "10s"} {
				var got string
				if err := conn.QueryRow(context.Background(), "SHOW "+name).Scan(&got); err != nil || got != want {
					t.Errorf("the writer's %s is %q (%v), want %s", name, got, err, want)
				}
			}
			close(stalled)
			<-resume
		})
	}
	failed := make(chan error, 1)
	go func() {
		_, err := a.Append(context.Background(), routine(2))
		failed <- err
	}()
	<-stalled
	// b waits for the head until the server ends a's idle transaction.
	eb := mustAppend(t, b, routine(3))
	close(resume)
	if err := <-failed; err == nil {
		t.Fatal("the stalled writer's append succeeded after its session ended")
	}
	if eb.Seq != 2 {
		t.Fatalf("b's entry got seq %d, want 2", eb.Seq)
	}
	if e := mustAppend(t, a, routine(4)); e.Seq != 3 || e.PrevHash != eb.Hash {
		t.Fatalf("a's next entry: seq %d", e.Seq)
	}
	verified(t, a, key)
}

// Checkpoints, witnessed checkpoints and exports, on both dialects.
func TestCheckpointsAndWitnessesOnBothDialects(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		key := seededKey(10)
		l := openLog(t, db, key, audit.Options{CheckpointEvery: 5 * time.Millisecond})
		mustAppend(t, l, routine(1))
		mustAppend(t, l, routine(2))
		// Wait (without a timing assertion) for the ticker to sign size 2.
		for n := 0; n == 0; time.Sleep(5 * time.Millisecond) {
			if err := db.QueryRow(`SELECT COUNT(*) FROM audit_checkpoints WHERE size = 2`).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		at2, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := l.Checkpoint(ctx); !bytes.Equal(at2, again) {
			t.Fatal("an unchanged log got a new checkpoint")
		}
		w, err := torchwood.NewCosignatureSigner("w.example", seededKey(11))
		if err != nil {
			t.Fatal(err)
		}
		_, v, _ := audit.ParsePublicKey(l.PublicKey())
		n, err := note.Open(at2, note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		cosigned, err := note.Sign(n, w)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.StoreWitnessed(ctx, w.Verifier().String(), cosigned); err != nil {
			t.Fatal(err)
		}
		if ws, err := l.LatestWitnessed(ctx); err != nil || len(ws) != 1 || ws[0].Size != 2 {
			t.Fatalf("LatestWitnessed: %+v %v", ws, err)
		}
		mustAppend(t, l, routine(3))
		var buf bytes.Buffer
		if err := l.Export(ctx, &buf, 0); err != nil {
			t.Fatal(err)
		}
		s, err := verify.Export(bytes.NewReader(buf.Bytes()), l.PublicKey(), verify.Options{WitnessKeys: []string{w.Verifier().String()}})
		if err != nil || s.WitnessedLines != 1 {
			t.Fatalf("verify: %+v %v", s, err)
		}
		var se *audit.SinceError
		if err := l.Export(ctx, &bytes.Buffer{}, 4); !errors.As(err, &se) || se.Last != 3 {
			t.Fatalf("Export --since 4 of 3 entries: %v", err)
		}
	})
}

// A replica its peers fenced appends nothing more: they act for it now,
// and what they append in its stead must be the only copy.
func TestFencedOwnerAppendsNothing(t *testing.T) { appendsNothingOnceFenced(t, 9, false) }

// A replica fenced and then forgotten by its peers (its row deleted,
// store.Owners.Forget) still appends nothing when it wakes: a row that
// was there and is gone is a fence, not a licence.
func TestForgottenOwnerAppendsNothing(t *testing.T) { appendsNothingOnceFenced(t, 10, true) }

func appendsNothingOnceFenced(t *testing.T, seed byte, forget bool) {
	ctx := context.Background()
	key := seededKey(seed)
	a, b, _, _, db := twoReplicas(t, key, audit.Options{}, audit.Options{})
	owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{OnFenced: func(string) {}})
	if err != nil {
		t.Fatalf("OwnersFor: %v", err)
	}
	release, err := owners.Hold("replica-a")
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	t.Cleanup(release)
	mustAppend(t, a, routine(1)) // its row unfenced: it appends
	if err := owners.Fence(ctx, "replica-a"); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if forget {
		if _, err := db.ExecContext(ctx, `DELETE FROM replicas WHERE id = ? AND fenced`, "replica-a"); err != nil {
			t.Fatalf("forget: %v", err)
		}
	}
	if _, err := a.Append(ctx, routine(2)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Append by a fenced owner (forgotten: %v): %v, want an error wrapping store.ErrFenced", forget, err)
	}
	mustAppend(t, b, routine(3)) // its peer goes on
	got := verified(t, b, key)
	if len(got) != 2 || got[0].Args == nil || string(got[1].Args) != string(routine(3).Args) {
		t.Fatalf("the log holds %d entries %+v, want the one before the fence and the peer's", len(got), got)
	}
}
