package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// archive writes and verifies the archive through seq through, after
// the entries of the previous archive, then prunes it, as the archive
// command does: every archive is a complete export from seq 1.
func archive(t *testing.T, l *audit.Log, through int64, previous []byte) []byte {
	t.Helper()
	ctx := context.Background()
	var buf bytes.Buffer
	if previous != nil {
		lines, _ := splitExport(t, previous)
		buf.Write(joinExport(lines, nil))
	}
	cp, err := l.WriteArchive(ctx, &buf, through)
	if err != nil {
		t.Fatalf("WriteArchive: %v", err)
	}
	s, err := Export(bytes.NewReader(buf.Bytes()), l.PublicKey(), Options{})
	if err != nil {
		t.Fatalf("the archive does not verify: %v", err)
	}
	if s.LastSeq != through || s.TreeSize != through {
		t.Fatalf("archive ends at %d (tree %d), want %d", s.LastSeq, s.TreeSize, through)
	}
	sum := sha256.Sum256(buf.Bytes())
	e, err := l.Prune(ctx, audit.Pruning{Checkpoint: cp, ArchiveSHA256: hex.EncodeToString(sum[:]), Archive: "archive.jsonl"})
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if e.Kind != vocab.KindAuditPruned || !strings.Contains(string(e.Result), hex.EncodeToString(sum[:])) {
		t.Fatalf("pruning entry %s %s does not name the archive", e.Kind, e.Result)
	}
	return buf.Bytes()
}

// TestArchivePruneAppendExportVerify: the export of a pruned log verifies
// with the archive as its previous export, across two archives, and not
// without it; a tampered archive is refused.
func TestArchivePruneAppendExportVerify(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only; auditpg tests the refusal")
	key := seededKey(1)
	// Not openLog: archiving is built for the SQLite log only, whatever
	// store the test pass runs on.
	l, err := audit.Open(context.Background(), storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	entries := sampleEntries()
	for _, e := range entries[:8] {
		mustAppend(t, l, e)
	}
	first := archive(t, l, 5, nil)
	for _, e := range entries[8:] {
		mustAppend(t, l, e)
	}
	export := exportBytes(t, l, 0)
	pub := l.PublicKey()
	s, err := Export(bytes.NewReader(export), pub, Options{Previous: bytes.NewReader(first)})
	if err != nil {
		t.Fatalf("export after pruning, --previous the archive: %v", err)
	}
	if s.FirstSeq != 6 || s.Extends != 5 || s.LastSeq != int64(len(entries))+1 {
		t.Fatalf("summary: %+v", s)
	}
	wantVerifyErr(t, export, pub, nil, 6, "verify it with a previous export that reaches seq 5")

	// A second archive holds the first's entries and those after: a
	// complete export again, which later exports extend.
	second := archive(t, l, 9, first)
	mustAppend(t, l, audit.Entry{Kind: vocab.KindAgentFrozen, Agent: "agent-1", Approver: "cli:root", DecidedAt: "2026-03-01T09:31:00.000000000Z", Reason: "frozen"})
	export = exportBytes(t, l, 0)
	if s, err := Export(bytes.NewReader(export), pub, Options{Previous: bytes.NewReader(second)}); err != nil || s.FirstSeq != 10 {
		t.Fatalf("export after the second archive, --previous it: %+v, %v", s, err)
	}
	if _, err := Export(bytes.NewReader(export), pub, Options{Previous: bytes.NewReader(first)}); err == nil {
		t.Fatal("an export after the second archive verified with only the first")
	}

	// A tampered archive: one entry's content changed.
	lines, cp := splitExport(t, first)
	lines[2] = bytes.Replace(lines[2], []byte(`"agent-1"`), []byte(`"agent-9"`), 1)
	tampered := joinExport(lines, cp)
	if _, err := Export(bytes.NewReader(tampered), pub, Options{}); err == nil {
		t.Fatal("a tampered archive verified")
	}
	if _, err := Export(bytes.NewReader(exportBytesAfter(t, l, first)), pub, Options{Previous: bytes.NewReader(tampered)}); err == nil {
		t.Fatal("an export verified against a tampered archive")
	}
}

// exportBytesAfter is an export of l from the entry after the archive a.
func exportBytesAfter(t *testing.T, l *audit.Log, a []byte) []byte {
	lines, _ := splitExport(t, a)
	return exportBytes(t, l, int64(len(lines)))
}

// TestPrunedEntryRules: an audit.pruned entry must name an archive of
// entries before it, and with a previous export its root must be theirs.
func TestPrunedEntryRules(t *testing.T) {
	ctx := context.Background()
	key := seededKey(1)
	pruned := func(through int64, root string) audit.Entry {
		return audit.Entry{Kind: vocab.KindAuditPruned, Reason: "test",
			Result: []byte(fmt.Sprintf(`{"archived_through":%d,"archive_sha256":"%s","archive_root":"%s"}`, through, strings.Repeat("ab", 32), root))}
	}
	for _, c := range []struct {
		name   string
		entry  func(l *audit.Log) audit.Entry
		reason string
	}{
		{"right root", func(l *audit.Log) audit.Entry {
			root, err := l.TreeHash(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			return pruned(3, hex.EncodeToString(root[:]))
		}, ""},
		{"another root", func(*audit.Log) audit.Entry { return pruned(3, strings.Repeat("cd", 32)) }, "archive_root is not the Merkle root of entries 1 to 3"},
		{"itself", func(*audit.Log) audit.Entry { return pruned(5, strings.Repeat("cd", 32)) }, "archived_through 5 is not an entry before this one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openLogWith(t, key, sampleEntries()[:4])
			earlier := exportBytes(t, l, 0)
			mustAppend(t, l, c.entry(l))
			export := exportBytes(t, l, 0)
			if c.reason == "" {
				if _, err := Export(bytes.NewReader(export), l.PublicKey(), Options{Previous: bytes.NewReader(earlier)}); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantVerifyErr(t, export, l.PublicKey(), earlier, 5, c.reason)
		})
	}
}
