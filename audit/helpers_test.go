package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/vocab"
)

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

// StoreBackend gives the backend of a database that is not a SQLite
// file, or nil for one that is. pg_test.go (package audit_test, which may
// import audit/auditpg) sets it, so that under
// storetest.EnvStore=postgres the log's tests run on PostgreSQL.
var StoreBackend func(ctx context.Context, db *sql.DB) (Backend, error)

// openTest is Open on the backend db's dialect needs (StoreBackend).
func openTest(ctx context.Context, db *sql.DB, key ed25519.PrivateKey, opts Options) (*Log, error) {
	if opts.Backend == nil && StoreBackend != nil {
		b, err := StoreBackend(ctx, db)
		if err != nil {
			return nil, err
		}
		opts.Backend = b
	}
	return Open(ctx, db, key, opts)
}

func openLog(t testing.TB, db *sql.DB, key ed25519.PrivateKey, opts Options) *Log {
	t.Helper()
	l, err := openTest(context.Background(), db, key, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustAppend(t testing.TB, l *Log, e Entry) Entry {
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
func sampleEntries() []Entry {
	const request = "5f2b6c1e-8d0e-4c1b-9f3a-2b7c1d0e9a11"
	return []Entry{
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
func exportBytes(t testing.TB, l *Log, since int64) []byte {
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
