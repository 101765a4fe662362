package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/gowebpki/jcs"
)

// testdata/audit/export.jsonl is a format 1 export, written before JSON
// members were stored in their RFC 8785 form and before entries recorded
// their format. It must keep verifying. Its hashes also show that storing
// the JSON members in JCS form changes no hash: each line with its members
// rewritten in JCS form hashes to the hash it has.
func TestGoldenExport(t *testing.T) {
	golden := filepath.Join("..", "..", "testdata", "audit", "export.jsonl")
	pubFile := filepath.Join("..", "..", "testdata", "audit", "server.pub")
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	pubKey, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(pubKey)) != pubText(seededKey(1)) {
		t.Fatalf("%s is not the key of seededKey(1)", pubFile)
	}
	for _, all := range []bool{false, true} {
		s, err := Export(bytes.NewReader(want), string(pubKey), Options{AllSignatures: all})
		if err != nil {
			t.Fatalf("golden export does not verify: %v", err)
		}
		if s.Entries != 10 || s.FirstSeq != 1 || s.LastSeq != 10 || s.TreeSize != 10 {
			t.Fatalf("summary %+v", s)
		}
	}
	lines, _ := splitExport(t, want)
	rewritten := 0
	for i, line := range lines {
		var e audit.Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		prev, _ := decodeHash(e.PrevHash)
		for _, m := range []*json.RawMessage{&e.Args, &e.Result, &e.AuthorizationDetails} {
			if len(*m) == 0 {
				continue
			}
			canon, err := jcs.Transform(*m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(canon, *m) {
				rewritten++
			}
			*m = canon
		}
		if sum, err := chainHash(prev, &e); err != nil || hex.EncodeToString(sum[:]) != e.Hash {
			t.Fatalf("seq %d: with JCS members the hash is %x, the entry says %s (%v)", i+1, sum, e.Hash, err)
		}
	}
	if rewritten == 0 {
		t.Fatal("no member of the golden export differs from its JCS form; the test proves nothing")
	}
}

func TestConcurrentAppendsAndTwoLogs(t *testing.T) {
	dir := t.TempDir()
	key := seededKey(1)
	// Two Logs on two connections pools stand for serve and the CLI
	// appending to the same file.
	a := openLog(t, storetest.Open(t, dir), key, audit.Options{})
	b := openLog(t, storetest.Open(t, dir), key, audit.Options{})
	var wg sync.WaitGroup
	seen := make(chan int64, 400)
	for i := range 8 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			for range 50 {
				e, err := l.Append(context.Background(), audit.Entry{Kind: vocab.KindCallAllowed, Agent: fmt.Sprint("agent-", i)})
				if err != nil {
					t.Error(err)
					return
				}
				seen <- e.Seq
			}
		})
	}
	stop := make(chan struct{})
	var cpWG sync.WaitGroup
	cpWG.Go(func() { // checkpoints while the other process appends
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := b.Checkpoint(context.Background()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	cpWG.Wait()
	close(seen)
	got := map[int64]bool{}
	for s := range seen {
		if got[s] {
			t.Fatalf("seq %d handed out twice", s)
		}
		got[s] = true
	}
	if len(got) != 400 {
		t.Fatalf("%d distinct seqs, want 400", len(got))
	}
	if _, err := Export(bytes.NewReader(exportBytes(t, a, 0)), a.PublicKey(), Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesTamperedLog(t *testing.T) {
	key := seededKey(1)
	cases := []tamperCase{
		{"change a field", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			sqlExec(t, db, `UPDATE audit_entries SET body = replace(body, '"amount":500000', '"amount":900000') WHERE seq = 3`)
			return key
		}, 3, "hash does not match"},
		{"delete a row", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			sqlExec(t, db, `DELETE FROM audit_entries WHERE seq = 5`)
			return key
		}, 5, "missing"},
		{"reorder two rows", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			sqlExec(t, db, `UPDATE audit_entries SET seq = -1 WHERE seq = 3`)
			sqlExec(t, db, `UPDATE audit_entries SET seq = 3 WHERE seq = 6`)
			sqlExec(t, db, `UPDATE audit_entries SET seq = 6 WHERE seq = -1`)
			return key
		}, 3, "holds the entry for seq 6"},
		{"truncate the tail", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			sqlExec(t, db, `DELETE FROM audit_entries WHERE seq > 7`)
			return key
		}, 8, "missing"},
		{"swap the key", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			return seededKey(2)
		}, 1, "sig does not verify"},
		{"forge a checkpoint", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			s, _ := newSigner(seededKey(3))
			msg, _ := signCheckpoint(s, 10, [32]byte{1})
			sqlExec(t, db, `INSERT INTO audit_checkpoints (size, note, created) VALUES (10, ?, 'now')`, string(msg))
			return key
		}, 10, "not signed by the server key"},
		{"splice in rows of another log", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			other := storetest.Open(t, t.TempDir())
			ol := openLog(t, other, key, audit.Options{Now: stepClock()})
			for _, e := range sampleEntries()[5:] {
				mustAppend(t, ol, e)
			}
			rows, err := other.Query(`SELECT seq, hash, body FROM audit_entries WHERE seq IN (3, 4)`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var seq int64
				var hash, body string
				rows.Scan(&seq, &hash, &body)
				sqlExec(t, db, `UPDATE audit_entries SET hash = ?, body = ? WHERE seq = ?`, hash, body, seq)
			}
			return key
		}, 3, "prev_hash"},
		{"rewrite the tree", func(t *testing.T, db *sql.DB, _ string) ed25519.PrivateKey {
			sqlExec(t, db, `UPDATE audit_tree SET hash = ?`, make([]byte, 32))
			return key
		}, 0, "Merkle tree"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db := storetest.Open(t, dir)
			l, err := openAudit(context.Background(), db, key, audit.Options{Now: stepClock()})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range sampleEntries() {
				mustAppend(t, l, e)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			reopenKey := tc.tamper(t, db, dir)

			l2, err := openAudit(context.Background(), db, reopenKey, audit.Options{})
			var te *audit.TamperError
			if !errors.As(err, &te) || l2 == nil {
				t.Fatalf("Open: %v, log %v; want a *audit.TamperError and a readable log", err, l2)
			}
			defer l2.Close()
			if te.Seq != tc.seq || !strings.Contains(te.Reason, tc.reason) {
				t.Fatalf("tamper reported at seq %d %q, want seq %d containing %q", te.Seq, te.Reason, tc.seq, tc.reason)
			}
			_, err = l2.Append(context.Background(), audit.Entry{Kind: vocab.KindCallAllowed})
			var te2 *audit.TamperError
			if !errors.As(err, &te2) || te2.Seq != tc.seq {
				t.Fatalf("Append on a tampered log: %v", err)
			}
			if _, err := l2.Checkpoint(context.Background()); err == nil {
				t.Fatal("a tampered log signed a checkpoint")
			}
			// The export still works, and the offline verifier also fails
			// (the tree case is caught only at Open: exports carry no tree).
			exp := exportBytes(t, l2, 0)
			if _, err := Export(bytes.NewReader(exp), pubText(reopenKey), Options{}); err == nil && tc.seq != 0 {
				t.Fatal("export of a tampered log verifies")
			}
		})
	}
}

func TestVerifyCatchesTamperedExport(t *testing.T) {
	key := seededKey(1)
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, key, audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	export := exportBytes(t, l, 0)
	pub := pubText(key)
	if _, err := Export(bytes.NewReader(export), pub, Options{}); err != nil {
		t.Fatal(err)
	}
	entries, cp := splitExport(t, export)
	clone := func() [][]byte {
		out := make([][]byte, len(entries))
		for i, e := range entries {
			out[i] = append([]byte(nil), e...)
		}
		return out
	}

	changed := clone()
	changed[3] = bytes.Replace(changed[3], []byte(`"rm -rf /"`), []byte(`"ls -la"`), 1)
	wantVerifyErr(t, joinExport(changed, cp), pub, nil, 4, "hash does not match")

	deleted := append(clone()[:4], clone()[5:]...)
	wantVerifyErr(t, joinExport(deleted, cp), pub, nil, 5, "missing")

	reordered := clone()
	reordered[2], reordered[5] = reordered[5], reordered[2]
	wantVerifyErr(t, joinExport(reordered, cp), pub, nil, 3, "missing: the next entry is seq 6")

	wantVerifyErr(t, joinExport(clone()[:7], cp), pub, nil, 8, "missing: the checkpoint covers 10")
	wantVerifyErr(t, joinExport(clone()[:7], nil), pub, nil, 8, "does not end with a checkpoint")

	// Another key: the checkpoint says so (the entries carry no sig);
	// with a sig on an entry (an export made before issue 27), so does
	// that entry, checked whether or not every signature was asked for.
	for _, all := range []bool{false, true} {
		if _, err := Export(bytes.NewReader(export), pubText(seededKey(2)), Options{AllSignatures: all}); err == nil || !strings.Contains(err.Error(), "seq 10: checkpoint is not signed by the server key") {
			t.Fatalf("other key: %v", err)
		}
	}
	signed := clone()
	var first audit.Entry
	if err := json.Unmarshal(signed[0], &first); err != nil {
		t.Fatal(err)
	}
	h, _ := decodeHash(first.Hash)
	first.Sig = encodeSig(ed25519.Sign(key, h[:]))
	signed[0], _ = encodeLine(&first)
	if _, err := Export(bytes.NewReader(joinExport(signed, cp)), pub, Options{}); err != nil {
		t.Fatalf("an entry with its sig: %v", err)
	}
	if _, err := Export(bytes.NewReader(joinExport(signed, cp)), pubText(seededKey(2)), Options{}); err == nil || !strings.Contains(err.Error(), "seq 1: sig does not verify") {
		t.Fatalf("other key, an entry with its sig: %v", err)
	}

	forged := checkpointLineFor(t, seededKey(3), 10, [32]byte{})
	wantVerifyErr(t, joinExport(clone(), forged), pub, nil, 10, "not signed by the server key")
	wrongRoot := checkpointLineFor(t, key, 10, [32]byte{})
	wantVerifyErr(t, joinExport(clone(), wrongRoot), pub, nil, 10, "not the Merkle root")

	// Splice the first half of another log (same key, other history).
	db2 := storetest.Open(t, t.TempDir())
	l2 := openLog(t, db2, key, audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		if e.Agent != "" {
			e.Agent = "agent-9"
		}
		mustAppend(t, l2, e)
	}
	otherEntries, _ := splitExport(t, exportBytes(t, l2, 0))
	spliced := append(otherEntries[:5:5], clone()[5:]...)
	wantVerifyErr(t, joinExport(spliced, cp), pub, nil, 6, "prev_hash")

	// A field the format does not know is refused, not ignored.
	extra := clone()
	extra[1] = bytes.Replace(extra[1], []byte(`{"seq":2,`), []byte(`{"seq":2,"note":"x",`), 1)
	wantVerifyErr(t, joinExport(extra, cp), pub, nil, 2, "canonical form")

	wantVerifyErr(t, append(joinExport(clone(), cp), "{}\n"...), pub, nil, 11, "data after the checkpoint")
}

func TestVerifyPreviousConsistency(t *testing.T) {
	key := seededKey(1)
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, key, audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	older := exportBytes(t, l, 0)
	for _, i := range []int{0, 1, 3, 4, 5} {
		mustAppend(t, l, sampleEntries()[i])
	}
	newer := exportBytes(t, l, 0)
	pub := pubText(key)

	s, err := Export(bytes.NewReader(newer), pub, Options{Previous: bytes.NewReader(older)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Extends != 10 || s.TreeSize != 15 || s.Entries != 15 {
		t.Fatalf("summary %+v", s)
	}

	// The newer entries under the older export's checkpoint.
	_, oldCP := splitExport(t, older)
	newEntries, _ := splitExport(t, newer)
	wantVerifyErr(t, joinExport(newEntries, oldCP), pub, nil, 11, "not covered by the checkpoint (size 10)")

	// An incremental export verifies against the older one.
	incremental := exportBytes(t, l, 10)
	s, err = Export(bytes.NewReader(incremental), pub, Options{Previous: bytes.NewReader(older)})
	if err != nil {
		t.Fatal(err)
	}
	if s.FirstSeq != 11 || s.LastSeq != 15 || s.Entries != 5 {
		t.Fatalf("summary %+v", s)
	}
	wantVerifyErr(t, incremental, pub, nil, 11, "previous export")

	// Identical exports are trivially consistent.
	if _, err := Export(bytes.NewReader(older), pub, Options{Previous: bytes.NewReader(older)}); err != nil {
		t.Fatal(err)
	}

	// An attacker with the server key rewrites seq 4 and re-signs the
	// whole chain. Alone the forgery verifies; against the older export
	// it does not.
	forged := resign(t, newer, key, func(e *audit.Entry) {
		if e.Seq == 4 {
			e.Reason = "allowed after all"
		}
	})
	if _, err := Export(bytes.NewReader(forged), pub, Options{}); err != nil {
		t.Fatalf("the re-signed forgery should verify on its own: %v", err)
	}
	wantVerifyErr(t, forged, pub, older, 4, "differs from the same entry in the previous export")

	// A newer export that drops entries the older one had.
	entries, _ := splitExport(t, older)
	shorter := resign(t, joinExport(entries[:8], []byte("checkpoint placeholder")), key, func(*audit.Entry) {})
	wantVerifyErr(t, shorter, pub, older, 9, "missing")

	// A bad previous export is reported as such.
	wantVerifyErr(t, newer, pub, forged[:len(forged)-10], 15, "previous export")
}

func TestVerifyAgainstEmptyPrevious(t *testing.T) {
	key := seededKey(1)
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	empty := exportBytes(t, l, 0)
	mustAppend(t, l, sampleEntries()[0])
	s, err := Export(bytes.NewReader(exportBytes(t, l, 0)), pubText(key), Options{Previous: bytes.NewReader(empty)})
	if err != nil || s.Entries != 1 {
		t.Fatalf("%v %+v", err, s)
	}
	if _, err := Export(bytes.NewReader(empty), pubText(key), Options{}); err != nil {
		t.Fatal(err)
	}
}

// An export made when nothing was appended since the previous one holds
// only a checkpoint; with the previous export it verifies, and says that
// it proves nothing new.
func TestExportWithNothingNew(t *testing.T) {
	key := seededKey(1)
	pub := pubText(key)
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	older := exportBytes(t, l, 0)
	empty := exportBytes(t, l, 10)
	if n := bytes.Count(empty, []byte{'\n'}); n != 1 {
		t.Fatalf("export --since 10 of 10 entries has %d lines:\n%s", n, empty)
	}
	s, err := Export(bytes.NewReader(empty), pub, Options{Previous: bytes.NewReader(older)})
	if err != nil {
		t.Fatal(err)
	}
	if !s.NothingNew || s.Entries != 0 || s.TreeSize != 10 || s.Extends != 10 || !strings.Contains(s.String(), "Nothing new is proven") {
		t.Fatalf("summary %+v: %s", s, s)
	}
	wantVerifyErr(t, empty, pub, nil, 1, "missing: the checkpoint covers 10 entries")

	// A checkpoint over another tree of the same size is refused, and so
	// is one over a smaller tree than the previous export's.
	forged := checkpointLineFor(t, key, 10, [32]byte{7})
	wantVerifyErr(t, append(forged, '\n'), pub, older, 10, "not the Merkle root")
	shorter := exportBytes(t, openLogWith(t, key, sampleEntries()[:4]), 4)
	wantVerifyErr(t, shorter, pub, older, 5, "missing: the previous export reaches seq 10, this one ends at 4")

	// Against a previous export that is shorter, an empty export cannot
	// show the entries in between.
	_, cp := splitExport(t, empty)
	prefix := exportBytes(t, openLogWith(t, key, sampleEntries()[:4]), 0)
	wantVerifyErr(t, joinExport(nil, cp), pub, prefix, 5, "missing: the export holds no entries, its checkpoint covers 10")
}

// tamperCase changes a closed, checkpointed log of 10 sample entries.
type tamperCase struct {
	name   string
	tamper func(t *testing.T, db *sql.DB, dir string) ed25519.PrivateKey // returns the key to reopen with
	seq    int64
	reason string
}

func sqlExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
