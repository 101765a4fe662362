package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

func keyText(k ed25519.PrivateKey) string { return audit.PublicKeyText(k.Public().(ed25519.PublicKey)) }

func exportLog(t *testing.T, l *audit.Log) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rejected(reason string) audit.Entry {
	return audit.Entry{Kind: vocab.KindCallRejected, Agent: "a", Tool: "t", Reason: reason}
}

func TestExportAcrossTwoRotationsVerifiesFromTheFirstKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Open(t, dir)
	k1, k2, k3 := seededKey(1), seededKey(2), seededKey(3)
	l, err := openAudit(ctx, db, k1, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, rejected("under the first key"))
	if _, err := l.RotateKey(ctx, k2, "yearly rotation"); err != nil {
		t.Fatalf("RotateKey to the second key: %v", err)
	}
	mustAppend(t, l, rejected("under the second key"))
	if _, err := l.RotateKey(ctx, k3, "moved to an HSM"); err != nil {
		t.Fatalf("RotateKey to the third key: %v", err)
	}
	if l.PublicKey() != keyText(k3) {
		t.Fatalf("PublicKey after two rotations %q, want the third key", l.PublicKey())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The server starts again with the third key: the stored log, signed
	// by three keys, checks out and takes appends.
	l, err = openAudit(ctx, db, k3, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatalf("reopen with the key in force: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	mustAppend(t, l, rejected("under the third key, after a restart"))
	export := exportLog(t, l)

	for _, all := range []bool{false, true} {
		sum, err := Export(bytes.NewReader(export), keyText(k1), Options{AllSignatures: all})
		if err != nil {
			t.Fatalf("verify from the first key (all signatures %v): %v", all, err)
		}
		if sum.Entries != 5 {
			t.Fatalf("verified %d entries, want 5", sum.Entries)
		}
	}
	// The chain starts at the key the auditor gives: the later keys do
	// not vouch for the entries before them.
	if _, err := Export(bytes.NewReader(export), keyText(k2), Options{}); err == nil {
		t.Fatal("export verified from the second key, which did not sign its first rotation")
	}

	// A server holding a retired key cannot take the log back.
	old, err := openAudit(ctx, db, k1, audit.Options{})
	if old != nil {
		old.Close()
	}
	var te *audit.TamperError
	if !errors.As(err, &te) {
		t.Fatalf("Open with a retired key: %v, want refused", err)
	}
}

func TestRotationSignedOnlyByTheNewKeyIsRefused(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	trusted, intruder := seededKey(1), seededKey(9)
	// An export the intruder signed with its own key, whose first entry
	// claims to take over from the trusted key: the hand-over carries the
	// intruder's signature, and the entry's sig is the intruder's, not
	// the trusted key's.
	l, err := openAudit(ctx, db, intruder, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for _, r := range []string{"rotation", "y"} {
		mustAppend(t, l, rejected(r))
	}
	stmt := audit.RotationStatement(keyText(trusted), keyText(intruder))
	forged := resign(t, exportLog(t, l), intruder, func(e *audit.Entry) {
		if e.Seq == 1 {
			*e = audit.Entry{Seq: e.Seq, Time: e.Time, V: e.V, Kind: vocab.KindKeyRotated, PreviousKey: keyText(trusted), PublicKey: keyText(intruder),
				Signature: base64.RawURLEncoding.EncodeToString(ed25519.Sign(intruder, stmt))}
		}
	})
	_, err = Export(bytes.NewReader(forged), keyText(trusted), Options{})
	var ve *Error
	if !errors.As(err, &ve) || ve.Seq != 1 || !strings.Contains(ve.Reason, "sig does not verify") {
		t.Fatalf("a rotation signed only by the new key: %v, want refused at seq 1", err)
	}
}

// An export --since a previous export that ends after a rotation is
// checked with the key in force where it starts.
func TestPartialExportAfterARotationVerifiesWithThePrevious(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	k1, k2 := seededKey(1), seededKey(2)
	l := openLog(t, db, k1, audit.Options{Now: stepClock()})
	mustAppend(t, l, rejected("a"))
	if _, err := l.RotateKey(ctx, k2, ""); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, rejected("b"))
	older := exportLog(t, l)
	mustAppend(t, l, rejected("c"))
	mustAppend(t, l, rejected("d"))
	var since bytes.Buffer
	if err := l.Export(ctx, &since, 3); err != nil {
		t.Fatal(err)
	}
	for _, all := range []bool{false, true} {
		if _, err := Export(bytes.NewReader(since.Bytes()), keyText(k1), Options{Previous: bytes.NewReader(older), AllSignatures: all}); err != nil {
			t.Fatalf("export --since after a rotation (all signatures %v): %v", all, err)
		}
		if _, err := Export(bytes.NewReader(exportLog(t, l)), keyText(k1), Options{Previous: bytes.NewReader(older), AllSignatures: all}); err != nil {
			t.Fatalf("whole export with a previous one across a rotation (all signatures %v): %v", all, err)
		}
	}
}

// The old key alone cannot rotate either: the new key must sign the
// hand-over. And only RotateKey appends a rotation.
func TestRotationWithoutTheNewKeysSignatureIsRefused(t *testing.T) {
	ctx := context.Background()
	trusted, next := seededKey(1), seededKey(2)
	l := openLogWith(t, trusted, []audit.Entry{rejected("x"), rejected("rotation"), rejected("y")})
	if _, err := l.Append(ctx, audit.Entry{Kind: vocab.KindKeyRotated, PreviousKey: keyText(trusted), PublicKey: keyText(next)}); err == nil {
		t.Fatal("Append took a key.rotated entry; only RotateKey may")
	}
	stmt := audit.RotationStatement(keyText(trusted), keyText(next))
	forged := resign(t, exportLog(t, l), trusted, func(e *audit.Entry) {
		if e.Seq == 2 {
			*e = audit.Entry{Seq: e.Seq, Time: e.Time, V: e.V, Kind: vocab.KindKeyRotated, PreviousKey: keyText(trusted), PublicKey: keyText(next),
				Signature: base64.RawURLEncoding.EncodeToString(ed25519.Sign(trusted, stmt))}
		}
	})
	wantVerifyErr(t, forged, keyText(trusted), nil, 2, "signature does not verify with the new key")
}

// TestArchiveAcrossRotations: an archive that holds a key.rotated entry
// verifies from the first key; the pruned log reopens, also after a later
// rotation (the archive's checkpoint is then signed by a retired key), and
// its export verifies with the archive as --previous from the first key.
// An archive that would end before a rotation is refused: its checkpoint,
// signed by the key in force now, would name a key it does not hand to.
func TestArchiveAcrossRotations(t *testing.T) {
	storetest.SQLiteOnly(t, "archiving is built for the SQLite log only")
	ctx := context.Background()
	db := storetest.Open(t, t.TempDir())
	k1, k2, k3 := seededKey(1), seededKey(2), seededKey(3)
	l, err := audit.Open(ctx, db, k1, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustAppend(t, l, rejected(fmt.Sprintf("under the first key, %d", i)))
	}
	if _, err := l.RotateKey(ctx, k2, "yearly rotation"); err != nil { // seq 4
		t.Fatal(err)
	}
	for i := range 3 {
		mustAppend(t, l, rejected(fmt.Sprintf("under the second key, %d", i)))
	}
	if _, err := l.WriteArchive(ctx, &bytes.Buffer{}, 2); err == nil || !strings.Contains(err.Error(), "rotated after it") {
		t.Fatalf("archive ending before the rotation: %v", err)
	}

	var archived bytes.Buffer
	cp, err := l.WriteArchive(ctx, &archived, 5)
	if err != nil {
		t.Fatalf("WriteArchive across the rotation: %v", err)
	}
	if _, err := Export(bytes.NewReader(archived.Bytes()), keyText(k1), Options{}); err != nil {
		t.Fatalf("the archive does not verify from the first key: %v", err)
	}
	sum := sha256.Sum256(archived.Bytes())
	if _, err := l.Prune(ctx, audit.Pruning{Checkpoint: cp, ArchiveSHA256: hex.EncodeToString(sum[:]), Archive: "archive.jsonl"}); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	// A rotation after the archive: its checkpoint is now a retired key's.
	if _, err := l.RotateKey(ctx, k3, "moved to an HSM"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Open(ctx, db, k2, audit.Options{Now: stepClock()}); err == nil {
		t.Fatal("the pruned log opened with the retired second key")
	}
	l, err = audit.Open(ctx, db, k3, audit.Options{Now: stepClock()})
	if err != nil {
		t.Fatalf("reopen the pruned, rotated log with the key in force: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	mustAppend(t, l, rejected("under the third key, after a restart"))
	export := exportLog(t, l)
	s, err := Export(bytes.NewReader(export), keyText(k1), Options{Previous: bytes.NewReader(archived.Bytes()), AllSignatures: true})
	if err != nil {
		t.Fatalf("export after the archive, --previous it, from the first key: %v", err)
	}
	if s.FirstSeq != 6 || s.Extends != 5 {
		t.Fatalf("summary: %+v", s)
	}
	if _, err := Export(bytes.NewReader(export), keyText(k3), Options{Previous: bytes.NewReader(archived.Bytes())}); err == nil {
		t.Fatal("the archive verified from the third key, which signed none of it")
	}
}
