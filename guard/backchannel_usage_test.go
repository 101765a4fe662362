package guard

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// The rebuild of backchannel requests follows the rules of the running
// server (countWhileLive): from the amounts kept when each was raised,
// whether or not the log holds its arguments, a request still waiting or
// whose token was issued counts, one denied, expired, cancelled or whose
// exchange failed does not; a request raised before amounts were kept
// counts from its logged arguments, and only from them.
func TestRestoreBackchannelCountsRedactedRequestsByTheirKeptActions(t *testing.T) {
	_, amounts := realLog(t)
	ctx := context.Background()
	f := newFixture(t, vocab.LevelHigh)
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Amounts: amounts})
	defer g.Close()
	now := time.Now().UTC()
	pay := func(amount float64) Action {
		return Action{Tool: "transfer", Call: &tools.Call{Value: &tools.Value{Amount: amount, Currency: "USD", Counterparty: "Acme Supplies"}}}
	}
	deploy := Action{Tool: "deploy", Call: &tools.Call{}}
	var entries []audit.Entry
	// request raises request id with actions kept (none: raised before
	// amounts were kept), and logs kinds after its approval.requested.
	request := func(id string, amount float64, kept bool, kinds ...vocab.Kind) {
		canon, err := digest.NewArgs(map[string]any{"id": id, "amount": amount}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if kept {
			if err := g.keepActions(ctx, canon, []Action{deploy, pay(amount)}, now); err != nil {
				t.Fatal(err)
			}
		}
		e := audit.Entry{Kind: vocab.KindApprovalRequested, Tool: "ciba", Agent: "a", RequestID: id,
			ArgsSHA256: canon.Hex(), ArgsRedact: true, Time: now.Add(-time.Minute).Format(time.RFC3339Nano)}
		if id == "logged" {
			e.Args, e.ArgsRedact = canon.JSON(), false
		}
		entries = append(entries, e)
		for _, k := range kinds {
			e.Kind = k
			entries = append(entries, e)
		}
	}
	request("pending", 100, true)
	request("denied", 1000, true, vocab.KindApprovalDenied)
	request("expired", 2000, true, vocab.KindApprovalExpired)
	request("cancelled", 4000, true, vocab.KindApprovalCancelled)
	request("exchange-failed", 8000, true, vocab.KindApprovalApproved, vocab.KindCallFailed)
	request("token-issued", 16000, true, vocab.KindApprovalApproved, vocab.KindCallExecuted)
	request("logged", 32000, false)       // before amounts were kept, arguments in the log
	request("redacted-old", 64000, false) // before amounts were kept, arguments redacted: lost
	fromArgs := func(_ context.Context, args map[string]any) []Action {
		amount, _ := args["amount"].(float64)
		return []Action{pay(amount)}
	}
	if err := g.RestoreBackchannel(ctx, "ciba", entries, fromArgs); err != nil {
		t.Fatal(err)
	}
	g.usage.mu.Lock()
	u := g.usage.facts(keysOf("a", "transfer", &tools.Value{Currency: "USD", Counterparty: "acme supplies"}), now)
	d := g.usage.facts(keysOf("a", "deploy", nil), now)
	g.usage.mu.Unlock()
	if want := 100.0 + 16000 + 32000; u["agent_payee_amount_24h"] != want {
		t.Errorf("restored %v to the payee, want %v (usage %v)", u["agent_payee_amount_24h"], want, u)
	}
	if u["calls_1h"] != 3.0 || d["calls_1h"] != 2.0 {
		t.Errorf("restored %v transfer and %v deploy calls, want 3 and 2", u["calls_1h"], d["calls_1h"])
	}
}

// A backchannel request whose amounts cannot be kept is refused before
// its approval request exists, and recorded: after a restart it would not
// count. Its actions stop counting at once.
func TestBackchannelWhoseAmountsCannotBeKeptIsRefused(t *testing.T) {
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	amounts, err := store.OpenAmounts(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	amounts.Close()
	db.Close()
	f := newFixture(t, vocab.LevelHigh)
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans, Amounts: amounts})
	defer g.Close()
	b := backchannel(nil)
	b.Actions = []Action{{Tool: "transfer", Call: &tools.Call{Args: map[string]any{"amount": 10.0},
		Value: &tools.Value{Amount: 10, Currency: "USD", Counterparty: "Acme Supplies"},
		Facts: map[string]any{"counterparty": map[string]any{"known": true}}}}}
	_, err = g.Raise(context.Background(), b)
	var refusal *Refusal
	if !errors.As(err, &refusal) || !strings.Contains(err.Error(), "cannot keep the amounts") {
		t.Fatalf("Raise: %v", err)
	}
	if len(f.humans.created) != 0 {
		t.Fatalf("a request was raised: %+v", f.humans.created)
	}
	if e := f.log.last(vocab.KindCallDenied); e.Decision != string(vocab.LevelDeny) || !strings.Contains(e.Reason, "cannot keep the amounts") {
		t.Fatalf("call.denied %+v", e)
	}
	g.usage.mu.Lock()
	u := g.usage.facts(keysOf("ci-bot", "transfer", &tools.Value{Currency: "USD", Counterparty: "acme supplies"}), time.Now())
	g.usage.mu.Unlock()
	if u["agent_payee_amount_24h"] != 0.0 || u["calls_10m"] != 0.0 {
		t.Errorf("a refused request still counts: %v", u)
	}
}
