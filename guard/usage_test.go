package guard

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// realLog opens a real audit log and the amounts table in one database, as
// serve does.
func realLog(t *testing.T) (*audit.Log, *store.Amounts) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditpg.Open(ctx, db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	amounts, err := store.OpenAmounts(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { amounts.Close() })
	return log, amounts
}

func allEntries(t *testing.T, log *audit.Log) []audit.Entry {
	t.Helper()
	es, err := log.Since(context.Background(), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// With redact_args the log keeps only the arguments' SHA-256, and a
// restart still counts what was moved: 9,999 ran, the process restarted,
// and the next 9,999 to the same payee (19,998 > 10,000) waits for a human.
func TestRedactedAmountsSurviveARestart(t *testing.T) {
	for _, redact := range []bool{true, false} {
		t.Run(map[bool]string{true: "redacted", false: "in the log"}[redact], func(t *testing.T) {
			log, amounts := realLog(t)
			f := newFixture(t, vocab.LevelLow)
			f.cat.Replace("test", []*tools.Spec{payTo("Acme Supplies")})
			opts := Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Amounts: amounts,
				Tools: map[string]config.Tool{"transfer": {RedactArgs: redact}}}
			first := New(opts)
			pay := func(g *Guard) {
				g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 9999.0}})
			}
			pay(first)
			first.Close()
			es := allEntries(t, log)
			if len(f.humans.created) != 0 || es[len(es)-1].Kind != vocab.KindCallExecuted {
				t.Fatalf("the first 9,999 did not run at once: %+v", es)
			}
			for _, e := range es {
				if redact && len(e.Args) != 0 {
					t.Fatalf("%s keeps the arguments: %s", e.Kind, e.Args)
				}
			}

			second := New(opts)
			defer second.Close()
			if err := second.RestoreUsage(context.Background(), es); err != nil {
				t.Fatal(err)
			}
			f.humans.decide <- vocab.StateDenied
			pay(second)
			if len(f.humans.created) != 1 {
				t.Fatalf("after a restart, 9,999 more to the same payee did not wait for a human (log %v)", kindsOf(allEntries(t, log)))
			}
		})
	}
}

func kindsOf(es []audit.Entry) []vocab.Kind {
	var out []vocab.Kind
	for _, e := range es {
		out = append(out, e.Kind)
	}
	return out
}

// The rebuild from redacted entries and kept amounts follows the same
// rules as the running server: executed and interrupted calls count,
// pending requests count, denied and failed ones stop counting, and what
// is older than the window or was never recorded counts nothing.
func TestRestoreCountsRedactedEntriesByTheirKeptAmounts(t *testing.T) {
	_, amounts := realLog(t)
	ctx := context.Background()
	f := newFixture(t, vocab.LevelLow)
	f.cat.Replace("test", []*tools.Spec{payTo("Acme Supplies")})
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Amounts: amounts})
	defer g.Close()
	now := time.Now().UTC()
	sha := func(n int) string { return strings.Repeat(string(rune('a'+n)), 64) }
	keep := func(n int, amount float64, payee string, age time.Duration) {
		if err := amounts.KeepAmount(ctx, store.Amount{Tool: "transfer", ArgsSHA256: sha(n), Amount: amount, Currency: "USD",
			Counterparty: payee, At: now.Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	keep(0, 100, "Acme Supplies", 25*time.Hour)     // executed too long ago
	keep(1, 1000, "Acme Supplies", 30*time.Minute)  // executed
	keep(2, 20000, "ACME SUPPLIES", 30*time.Minute) // interrupted: may have moved
	keep(3, 50000, "Acme Supplies", 30*time.Minute) // requested, denied
	keep(4, 300, "Acme Supplies", 30*time.Minute)   // requested, still pending
	keep(5, 7000, "Acme Supplies", 30*time.Minute)  // requested, approved and executed
	keep(6, 5, "Acme Supplies", 30*time.Minute)     // routine, allowed, failed
	keep(7, 9e9, "Acme Supplies", 30*time.Minute)   // decided, but no entry counts it (the process died first)
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339Nano) }
	e := func(kind vocab.Kind, n int, req string, age time.Duration) audit.Entry {
		return audit.Entry{Kind: kind, Tool: "transfer", Agent: "a", ArgsRedact: true, ArgsSHA256: sha(n), RequestID: req, Time: at(age)}
	}
	err := g.RestoreUsage(ctx, []audit.Entry{
		e(vocab.KindCallExecuted, 0, "", 25*time.Hour),
		e(vocab.KindCallExecuted, 1, "", 30*time.Minute),
		e(vocab.KindCallAllowed, 2, "", 30*time.Minute),
		e(vocab.KindCallInterrupted, 2, "", 30*time.Minute),
		e(vocab.KindApprovalRequested, 3, "r3", 30*time.Minute),
		e(vocab.KindApprovalDenied, 3, "r3", 30*time.Minute),
		e(vocab.KindApprovalRequested, 4, "r4", 30*time.Minute),
		e(vocab.KindApprovalRequested, 5, "r5", 30*time.Minute),
		e(vocab.KindApprovalApproved, 5, "r5", 30*time.Minute),
		e(vocab.KindCallExecuted, 5, "r5", 30*time.Minute),
		e(vocab.KindCallAllowed, 6, "", 30*time.Minute),
		e(vocab.KindCallFailed, 6, "", 30*time.Minute),
		// Written before amounts were kept: no row, the arguments count.
		{Kind: vocab.KindCallExecuted, Tool: "transfer", Agent: "a", Args: []byte(`{"amount":2}`), ArgsSHA256: sha(9), Time: at(30 * time.Minute)},
	})
	if err != nil {
		t.Fatal(err)
	}
	g.usage.mu.Lock()
	u := g.usage.facts(keysOf("a", "transfer", &tools.Value{Currency: "USD", Counterparty: "acme supplies"}), now)
	g.usage.mu.Unlock()
	if want := 1000.0 + 20000 + 300 + 7000 + 2; u["agent_payee_amount_24h"] != want {
		t.Errorf("restored %v to the payee, want %v (usage %v)", u["agent_payee_amount_24h"], want, u)
	}
	if u["calls_1h"] != 5.0 {
		t.Errorf("calls_1h %v, want 5 (executed, interrupted, pending, approved, old executed)", u["calls_1h"])
	}
	// The week-old rows are forgotten at the rebuild.
	keep(8, 1, "x", 8*24*time.Hour)
	if err := g.RestoreUsage(ctx, nil); err != nil {
		t.Fatal(err)
	}
	rows, err := amounts.AmountsSince(ctx, now.Add(-30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rows[store.AmountKey("transfer", sha(8))]; ok || len(rows) != 8 {
		t.Errorf("after a rebuild %d rows are kept (%v), want the 8 of the last week", len(rows), rows)
	}
}

// A call whose amount cannot be kept does not run: after a restart it
// would not count. The refusal is in the log.
func TestCallWhoseAmountCannotBeKeptIsRefused(t *testing.T) {
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	amounts, err := store.OpenAmounts(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	amounts.Close()
	db.Close()
	f := newFixture(t, vocab.LevelLow)
	ran := 0
	spec := payTo("Acme Supplies")
	spec.Run = func(context.Context, *tools.Call) (*tools.Result, error) {
		ran++
		return &tools.Result{Content: "paid"}, nil
	}
	f.cat.Replace("test", []*tools.Spec{spec})
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Amounts: amounts})
	defer g.Close()
	res := g.Handle(context.Background(), Call{Tool: "transfer", Agent: "a", Args: map[string]any{"amount": 10.0}})
	if !res.IsError || !strings.Contains(text(res), "cannot keep the amount") || ran != 0 {
		t.Fatalf("ran %d times: %s", ran, text(res))
	}
	if e := f.log.last(vocab.KindCallDenied); e.Decision != string(vocab.LevelDeny) || !strings.Contains(e.Reason, "cannot keep the amount") {
		t.Fatalf("call.denied %+v", e)
	}
	// It does not count either: the usage is given back.
	g.usage.mu.Lock()
	u := g.usage.facts(keysOf("a", "transfer", &tools.Value{Currency: "USD", Counterparty: "acme supplies"}), time.Now())
	g.usage.mu.Unlock()
	if u["agent_payee_amount_24h"] != 0.0 || u["calls_10m"] != 0.0 {
		t.Errorf("a refused call still counts: %v", u)
	}
}
