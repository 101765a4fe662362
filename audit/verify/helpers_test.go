package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/gowebpki/jcs"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// wantVerifyErr runs Verify, with and without AllSignatures, and requires
// the same *VerifyError at seq from both: apart from an entry's own sig
// (see TestSignatureRule), the two modes prove the same.
func wantVerifyErr(t *testing.T, export []byte, key string, previous []byte, seq int64, reason string) {
	t.Helper()
	for _, all := range []bool{false, true} {
		opts := Options{AllSignatures: all}
		if previous != nil {
			opts.Previous = bytes.NewReader(previous)
		}
		_, err := Export(bytes.NewReader(export), key, opts)
		var ve *Error
		if !errors.As(err, &ve) {
			t.Fatalf("Verify (all signatures %v): got %v, want a *Error at seq %d", all, err, seq)
		}
		if ve.Seq != seq || !strings.Contains(ve.Reason, reason) {
			t.Fatalf("Verify (all signatures %v): got seq %d %q, want seq %d containing %q", all, ve.Seq, ve.Reason, seq, reason)
		}
	}
}

// seededKey is a fixed key for reproducible output.
func seededKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

// stepClock starts at a fixed instant and advances 1.000000001 s a call.
func stepClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second + time.Nanosecond)
		return t
	}
}

// openAudit is audit.Open on either dialect: a database storetest.Open
// opened on PostgreSQL (storetest.EnvStore) goes through auditpg.
func openAudit(ctx context.Context, db *sql.DB, key ed25519.PrivateKey, opts audit.Options) (*audit.Log, error) {
	return openAuditSigner(ctx, db, key, opts)
}

// openAuditSigner is audit.OpenSigner on either dialect.
func openAuditSigner(ctx context.Context, db *sql.DB, key audit.Signer, opts audit.Options) (*audit.Log, error) {
	if s := storetest.StoreOf(db); s != nil {
		return auditpg.OpenSigner(ctx, s, key, opts)
	}
	return audit.OpenSigner(ctx, db, key, opts)
}

func openLog(t testing.TB, db *sql.DB, key ed25519.PrivateKey, opts audit.Options) *audit.Log {
	t.Helper()
	l, err := openAudit(context.Background(), db, key, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustAppend(t testing.TB, l *audit.Log, e audit.Entry) audit.Entry {
	t.Helper()
	out, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append %s: %v", e.Kind, err)
	}
	return out
}

// sampleEntries is a small, varied log that meets every requirement
// Verify checks: executions follow their call.allowed, the approval
// request expires unapproved.
func sampleEntries() []audit.Entry {
	const request = "5f2b6c1e-8d0e-4c1b-9f3a-2b7c1d0e9a11"
	return []audit.Entry{
		{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "get_balance", Args: json.RawMessage(`{"account":"ops"}`), Decision: "low"},
		{Kind: vocab.KindCallExecuted, Agent: "agent-1", Tool: "get_balance", Args: json.RawMessage(`{"account":"ops"}`), Decision: "low", Result: json.RawMessage(`{"balance":"1200.50","currency":"EUR"}`)},
		{Kind: vocab.KindApprovalRequested, Agent: "agent-1", Tool: "transfer", Args: json.RawMessage(`{"to":"Vendor X & Söhne <ltd>","amount":500000,"currency":"USD"}`),
			Level: "high", Rule: "tools.transfer.rules[0]", RequestID: request, Quorum: 1, Eligible: []string{"alice", "bob"}, UserVerification: vocab.UVPreferred,
			AuthorizationDetails: json.RawMessage(`[{"type":"payment_initiation","actions":["transfer"],"instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X"}]`),
			Display:              "Approve $500,000.00 transfer to Vendor X", Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", ExpiresAt: "2026-03-01T09:35:00Z"},
		{Kind: vocab.KindCallDenied, Agent: "agent-2", Tool: "run_command", Args: json.RawMessage(`{"cmd":"rm -rf /"}`), Decision: "deny", Rule: "tools.run_command.rules[2]", Reason: "denied by policy"},
		{Kind: vocab.KindCallRejected, Agent: "agent-2", Tool: "transfer", Reason: "args.amount: must be > 0"},
		{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "read_secret", Args: json.RawMessage(`{"name":"db-password"}`), ArgsRedact: true, Decision: "low"},
		{Kind: vocab.KindCallExecuted, Agent: "agent-1", Tool: "read_secret", Args: json.RawMessage(`{"name":"db-password"}`), ArgsRedact: true, Decision: "low",
			Result: json.RawMessage(`{"name":"db-password","sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`)},
		{Kind: vocab.KindApprovalExpired, RequestID: request, Tool: "transfer", Reason: "nobody decided before expires_at"},
		{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "transfer", Args: json.RawMessage(`{"to":"Vendor Y","amount":50,"currency":"EUR"}`), Decision: "low"},
		{Kind: vocab.KindCallFailed, Agent: "agent-1", Tool: "transfer", Args: json.RawMessage(`{"to":"Vendor Y","amount":50,"currency":"EUR"}`), Decision: "low",
			Reason: "backend: connection refused \u2028 \"quoted\""},
	}
}

// exportBytes exports the whole log.
func exportBytes(t testing.TB, l *audit.Log, since int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := l.Export(context.Background(), &buf, since); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

// splitExport returns the entry lines and the checkpoint line.
func splitExport(t testing.TB, b []byte) ([][]byte, []byte) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(b, []byte{'\n'}), []byte{'\n'})
	return lines[:len(lines)-1], lines[len(lines)-1]
}

func joinExport(entries [][]byte, cp []byte) []byte {
	var buf bytes.Buffer
	for _, l := range entries {
		buf.Write(l)
		buf.WriteByte('\n')
	}
	if cp != nil {
		buf.Write(cp)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// resign plays an attacker holding the server key: it applies mutate to
// the entries, then rebuilds every hash, signature and the checkpoint so
// the export is self-consistent.
func resign(t testing.TB, export []byte, key ed25519.PrivateKey, mutate func(*audit.Entry)) []byte {
	t.Helper()
	entries := decodeEntries(t, export)
	for i := range entries {
		mutate(&entries[i])
	}
	return signChain(t, key, entries)
}

// decodeEntries reads the entries of an export, checkpoint left out.
func decodeEntries(t testing.TB, export []byte) []audit.Entry {
	t.Helper()
	lines, _ := splitExport(t, export)
	entries := make([]audit.Entry, 0, len(lines))
	for _, line := range lines {
		var e audit.Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	return entries
}

// signChain links, hashes and signs entries as they stand, in order, with
// key, and ends them with a checkpoint signed by it: what only the holder
// of the server key can make.
func signChain(t testing.TB, key ed25519.PrivateKey, entries []audit.Entry) []byte {
	t.Helper()
	var prev [32]byte
	var fr audit.Frontier
	out := make([][]byte, 0, len(entries))
	for _, e := range entries {
		e.PrevHash = hex.EncodeToString(prev[:])
		sum, err := chainHash(prev, &e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash = hex.EncodeToString(sum[:])
		e.Sig = encodeSig(ed25519.Sign(key, sum[:]))
		b, err := encodeLine(&e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		fr.Add(audit.LeafHash(sum))
		prev = sum
	}
	return joinExport(out, checkpointLineFor(t, key, fr.Size(), fr.Root()))
}

func checkpointLineFor(t testing.TB, key ed25519.PrivateKey, size int64, root tlog.Hash) []byte {
	t.Helper()
	s, err := newSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := signCheckpoint(s, size, root)
	if err != nil {
		t.Fatal(err)
	}
	line, err := audit.EncodeCheckpointLine(msg)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func pubText(key ed25519.PrivateKey) string {
	return audit.PublicKeyText(key.Public().(ed25519.PublicKey))
}

// The writer's encoding, rebuilt from the export format
// (docs/audit-export.md) for tests that play a forger holding the key.

// encodeLine is an entry's line: compact JSON in field order, without
// HTML escaping.
func encodeLine(e *audit.Entry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// chainHash is SHA-256(prev || JCS(e without hash and sig)).
func chainHash(prev [32]byte, e *audit.Entry) ([32]byte, error) {
	c := *e
	c.Hash, c.Sig = "", ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return [32]byte{}, err
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append(prev[:], canon...)), nil
}

func encodeSig(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }

func decodeHash(s string) ([32]byte, error) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// keySigner signs checkpoint notes with the server key.
type keySigner struct {
	key  ed25519.PrivateKey
	hash uint32
}

func newSigner(key ed25519.PrivateKey) (*keySigner, error) {
	_, v, err := audit.ParsePublicKey(audit.PublicKeyText(key.Public().(ed25519.PublicKey)))
	if err != nil {
		return nil, err
	}
	return &keySigner{key, v.KeyHash()}, nil
}

func (s *keySigner) Name() string                    { return audit.KeyName }
func (s *keySigner) KeyHash() uint32                 { return s.hash }
func (s *keySigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

func checkpointText(size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", audit.KeyName, size, base64.StdEncoding.EncodeToString(root[:]))
}

func signCheckpoint(s note.Signer, size int64, root tlog.Hash) ([]byte, error) {
	return note.Sign(&note.Note{Text: checkpointText(size, root)}, s)
}

func openLogWith(t *testing.T, key ed25519.PrivateKey, entries []audit.Entry) *audit.Log {
	t.Helper()
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	for _, e := range entries {
		mustAppend(t, l, e)
	}
	return l
}
