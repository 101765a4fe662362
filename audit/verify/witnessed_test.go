package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"github.com/countersign/countersign/audit"
	"golang.org/x/mod/sumdb/note"
)

func verifyWith(export, previous []byte, key string, witnesses ...string) (Summary, error) {
	opts := Options{WitnessKeys: witnesses}
	if previous != nil {
		opts.Previous = bytes.NewReader(previous)
	}
	return Export(bytes.NewReader(export), key, opts)
}

func TestExportCarriesWitnessedCheckpointsThatVerifyCheck(t *testing.T) {
	ctx := context.Background()
	key := seededKey(7)
	pub := pubText(key)
	w1, w2 := cosigner(t, "w1.example", 1), cosigner(t, "w2.example", 2)
	l := openLogWith(t, key, sampleEntries()[:4])
	at4, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StoreWitnessed(ctx, w1.Verifier().String(), cosign(t, key, at4, w1)); err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries()[4:] {
		mustAppend(t, l, e)
	}
	at10, _ := l.Checkpoint(ctx)
	if err := l.StoreWitnessed(ctx, w2.Verifier().String(), cosign(t, key, at10, w2)); err != nil {
		t.Fatal(err)
	}
	// What the log refuses to keep: a note without the witness's
	// cosignature, and a tree that is not this log's.
	if err := l.StoreWitnessed(ctx, w1.Verifier().String(), at10); err == nil {
		t.Fatal("stored a checkpoint that w1 did not cosign")
	}
	otherLog := openLogWith(t, key, sampleEntries()[1:5])
	foreign, _ := otherLog.Checkpoint(ctx)
	if err := l.StoreWitnessed(ctx, w1.Verifier().String(), cosign(t, key, foreign, w1)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("stored a cosigned checkpoint of another tree: %v", err)
	}

	export := exportBytes(t, l, 0)
	if n := bytes.Count(export, []byte(`{"witnessed":`)); n != 2 {
		t.Fatalf("%d witnessed lines in the export, want 2:\n%s", n, export)
	}
	s, err := verifyWith(export, nil, pub)
	if err != nil || s.WitnessedLines != 2 || s.Cosigners != nil || !strings.Contains(s.String(), "not checked") {
		t.Fatalf("without witness keys: %v %+v", err, s)
	}
	s, err = verifyWith(export, nil, pub, w1.Verifier().String(), w2.Verifier().String())
	if err != nil || s.Witnessed != 4 || strings.Join(s.Cosigners, ",") != "w1.example,w2.example" {
		t.Fatalf("both witnesses: %v %+v", err, s)
	}
	s, err = Export(bytes.NewReader(export), pub, Options{WitnessKeys: []string{w1.Verifier().String(), w2.Verifier().String()}, WitnessQuorum: 1})
	if err != nil || s.Witnessed != 10 || strings.Join(s.Cosigners, ",") != "w2.example" {
		t.Fatalf("one of two: %v %+v", err, s)
	}
	stranger := cosigner(t, "w1.example", 9) // w1's name, another key
	if _, err := verifyWith(export, nil, pub, stranger.Verifier().String()); err == nil || !strings.Contains(err.Error(), "cosigned by 0 of the 1") {
		t.Fatalf("a witness key that cosigned nothing: %v", err)
	}

	// A forged cosignature: w2's line altered.
	lines := bytes.Split(export, []byte("\n"))
	for i, line := range lines {
		if bytes.Contains(line, []byte("w2.example ")) {
			j := bytes.Index(line, []byte("w2.example ")) + len("w2.example ") + 10
			forged := bytes.Clone(line)
			forged[j] ^= 'A' ^ 'B'
			if forged[j] == line[j] {
				forged[j] = 'C'
			}
			lines[i] = forged
		}
	}
	forged := bytes.Join(lines, []byte("\n"))
	if _, err := verifyWith(forged, nil, pub, w2.Verifier().String()); err == nil {
		t.Fatal("a forged cosignature verified")
	}
	// A witnessed line whose proof does not lead to the final checkpoint.
	i := bytes.Index(export, []byte(`"proof":["`)) + len(`"proof":["`)
	broken := bytes.Clone(export)
	copy(broken[i:], strings.Repeat("A", 43)+"=")
	if _, err := verifyWith(broken, nil, pub); err == nil || !strings.Contains(err.Error(), "not a prefix") {
		t.Fatalf("a witnessed line with a bad proof: %v", err)
	}
}

// An auditor who kept only a witness's cosigned checkpoint (not a whole
// export) can use it as --previous: the new export must extend it, and
// with witness keys, it must carry their cosignatures.
func TestWitnessedCheckpointAsPrevious(t *testing.T) {
	ctx := context.Background()
	key := seededKey(7)
	pub := pubText(key)
	w := cosigner(t, "w1.example", 1)
	l := openLogWith(t, key, sampleEntries()[:6])
	at6, _ := l.Checkpoint(ctx)
	witnessed := cosign(t, key, at6, w)
	for _, e := range sampleEntries()[6:] {
		mustAppend(t, l, e)
	}
	export := exportBytes(t, l, 0)

	s, err := verifyWith(export, witnessed, pub, w.Verifier().String())
	if err != nil || s.Extends != 6 || !s.PreviousWitnessed || !strings.Contains(s.String(), "previous checkpoint (size 6)") {
		t.Fatalf("witnessed previous: %v %+v", err, s)
	}
	// Not cosigned by the trusted witness: refused with the keys, and
	// still a server-signed prefix without them.
	if _, err := verifyWith(export, at6, pub, w.Verifier().String()); err == nil || !strings.Contains(err.Error(), "cosigned by 0 of the 1") {
		t.Fatalf("an uncosigned previous with witness keys: %v", err)
	}
	if s, err := verifyWith(export, at6, pub); err != nil || s.Extends != 6 {
		t.Fatalf("a bare previous checkpoint: %v", err)
	}
	// The history the witness saw was rewritten.
	rewritten := openLogWith(t, key, append([]audit.Entry{sampleEntries()[1]}, sampleEntries()[1:]...))
	_, err = verifyWith(exportBytes(t, rewritten, 0), witnessed, pub, w.Verifier().String())
	var ve *Error
	if !errors.As(err, &ve) || ve.Seq != 6 || !strings.Contains(ve.Reason, "not a prefix") {
		t.Fatalf("a rewritten history: %v", err)
	}
	// A log cut back before the witnessed tree.
	short := openLogWith(t, key, sampleEntries()[:4])
	if _, err := verifyWith(exportBytes(t, short, 0), witnessed, pub); err == nil || !strings.Contains(err.Error(), "covers 6 entries") {
		t.Fatalf("a shorter log: %v", err)
	}
}

// cosigner is a tlog-cosignature witness key (torchwood's own signer, the
// one litewitness uses; the end-to-end tests run litewitness itself).
func cosigner(t *testing.T, name string, seed byte) *torchwood.CosignatureSigner {
	t.Helper()
	s, err := torchwood.NewCosignatureSigner(name, seededKey(seed))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// cosign appends s's cosignature to the server-signed checkpoint msg.
func cosign(t *testing.T, key ed25519.PrivateKey, msg []byte, s ...note.Signer) []byte {
	t.Helper()
	_, v, _ := audit.ParsePublicKey(pubText(key))
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	out, err := note.Sign(n, s...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A checkpoint a witness cosigned before a rotation is signed by the key
// of its time: the export after the rotation carries it and verifies from
// the first key, with the witness's cosignature counted.
func TestWitnessedCheckpointBeforeARotation(t *testing.T) {
	ctx := context.Background()
	k1, k2 := seededKey(7), seededKey(8)
	w1 := cosigner(t, "w1.example", 1)
	l := openLogWith(t, k1, sampleEntries()[:4])
	at4, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StoreWitnessed(ctx, w1.Verifier().String(), cosign(t, k1, at4, w1)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RotateKey(ctx, k2, "yearly"); err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEntries()[4:] {
		mustAppend(t, l, e)
	}
	export := exportBytes(t, l, 0)
	if n := bytes.Count(export, []byte(`{"witnessed":`)); n != 1 {
		t.Fatalf("%d witnessed lines in the export, want 1", n)
	}
	s, err := verifyWith(export, nil, pubText(k1), w1.Verifier().String())
	if err != nil || s.Witnessed != 4 || strings.Join(s.Cosigners, ",") != "w1.example" {
		t.Fatalf("export after the rotation, witnessed before it: %+v, %v", s, err)
	}

	// Kept bare checkpoints as --previous: one cosigned before the
	// rotation (the first key's) and one after it (the second key's).
	after, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, sampleEntries()[0])
	export = exportBytes(t, l, 0)
	for _, kept := range [][]byte{cosign(t, k1, at4, w1), cosign(t, k2, after, w1)} {
		if s, err := verifyWith(export, kept, pubText(k1), w1.Verifier().String()); err != nil || !s.PreviousWitnessed {
			t.Fatalf("--previous a cosigned checkpoint %.30q: %+v, %v", kept, s, err)
		}
	}
	// The second key did not sign the tree of size 4.
	if _, err := verifyWith(export, cosign(t, k2, signedBy(t, k1, k2, at4), w1), pubText(k1), w1.Verifier().String()); err == nil {
		t.Fatal("--previous a checkpoint of size 4 signed by the key in force only later")
	}
}

// signedBy is at (signed by from) signed by to instead.
func signedBy(t *testing.T, from, to ed25519.PrivateKey, at []byte) []byte {
	t.Helper()
	_, v, _ := audit.ParsePublicKey(pubText(from))
	n, err := note.Open(at, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSigner(to)
	if err != nil {
		t.Fatal(err)
	}
	out, err := note.Sign(&note.Note{Text: n.Text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
