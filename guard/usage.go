package guard

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/guard/minutes"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// The policy sees what came before a call (the usage variable), so that a
// sum split into many small calls (salami) is judged as the sum. A call
// counts from the moment the policy lets it through or raises its request,
// under the same lock as the decision, so calls made in parallel see each
// other; it stops counting if it is refused by a human, expires, is
// cancelled or fails. Sums are kept per minute for 24 hours, so memory
// grows with distinct agents, payees and minutes, not with calls.

const usageHorizon = 24 * time.Hour

// usageBook is the rolling record.
type usageBook struct {
	// shared, when set, holds the windows of tools whose rules read
	// usage (sharedusage.go); their reservations are given back there.
	shared SharedUsage
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex
	series map[string]*minutes.Series
	adds   int
}

// usageKeys names the series a call counts in.
type usageKeys struct {
	calls, agent, payee, total string
}

func keysOf(agent, tool string, v *tools.Value) usageKeys {
	k := usageKeys{calls: "c\x00" + agent + "\x00" + tool}
	if v != nil {
		cur := v.Currency
		k.agent = "a\x00" + agent + "\x00" + tool + "\x00" + cur
		k.payee = "p\x00" + agent + "\x00" + tool + "\x00" + cur + "\x00" + strings.ToLower(v.Counterparty)
		k.total = "t\x00" + tool + "\x00" + cur
	}
	return k
}

// reservation is one call's share, to give back if the call never runs.
type reservation struct {
	min    int64
	keys   usageKeys
	amount float64
	shared bool // counted in usageBook.shared, not in the book
	// id is the call it counts, once it has one (requestCallID,
	// entryCallID): a shared share with an id is given back once for all
	// replicas, since a reaper may hold it too (reapusage.go).
	id string
	// since, when set, is the earliest minute a rebuilt share may have
	// counted in (min the latest): its exact minute is not known.
	since int64
}

func minuteOf(t time.Time) int64 { return t.Unix() / 60 }

// facts is the usage variable for a call at now. The caller holds mu.
func (b *usageBook) facts(k usageKeys, now time.Time) map[string]any {
	m := minuteOf(now)
	horizon := minuteOf(now.Add(-usageHorizon))
	get := func(key string, window time.Duration) float64 {
		s := b.series[key]
		if s == nil || key == "" {
			return 0
		}
		return s.Sum(m-int64(window/time.Minute)+1, horizon)
	}
	// The fields are authz.UsageKeys; a test holds the two together.
	return map[string]any{
		"calls_10m":              get(k.calls, 10*time.Minute),
		"calls_1h":               get(k.calls, time.Hour),
		"agent_amount_1h":        get(k.agent, time.Hour),
		"agent_amount_24h":       get(k.agent, usageHorizon),
		"agent_payee_amount_24h": get(k.payee, usageHorizon),
		"total_amount_24h":       get(k.total, usageHorizon),
	}
}

// add counts a call. The caller holds mu.
func (b *usageBook) add(k usageKeys, v *tools.Value, at time.Time) *reservation {
	if b.series == nil {
		b.series = map[string]*minutes.Series{}
	}
	r := &reservation{min: minuteOf(at), keys: k}
	if v != nil {
		r.amount = v.Amount
	}
	b.bump(r, 1)
	if b.adds++; b.adds%4096 == 0 {
		b.sweep(at)
	}
	return r
}

func (b *usageBook) bump(r *reservation, sign float64) {
	for key, v := range map[string]float64{r.keys.calls: 1, r.keys.agent: r.amount, r.keys.payee: r.amount, r.keys.total: r.amount} {
		if key == "" {
			continue
		}
		s := b.series[key]
		if s == nil {
			s = &minutes.Series{}
			b.series[key] = s
		}
		s.Add(r.min, sign*v)
	}
}

// release gives a call's share back: it will never run.
func (b *usageBook) release(r *reservation) {
	if r == nil {
		return
	}
	if r.shared {
		releaseShared(b.shared, b.log, r, b.now())
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bump(r, -1)
}

// sweep forgets keys with nothing inside the horizon. The caller holds mu.
func (b *usageBook) sweep(now time.Time) {
	horizon := minuteOf(now.Add(-usageHorizon))
	for key, s := range b.series {
		if s.Sum(horizon, horizon); s.Empty() {
			delete(b.series, key)
		}
	}
}

// Amounts keep what each counted call moved; store.Amounts satisfies it.
//
// Why a table and not the log: a restart used to rebuild the windows from
// the arguments logged with each entry, and with redact_args the log keeps
// only their SHA-256, so a restart forgot every redacted amount. The
// amounts the windows need (amount, currency, counterparty; agent, tool
// and time are on the entry) could ride in the entry instead, but the
// signed log is what an auditor receives: a payee that redaction keeps out
// of it must not come back in another member, and the log's format would
// change for a number the verifier never checks. So the log keeps saying
// which calls count and when (entries, their kinds and times, unchanged),
// and a row beside it, keyed by tool and args_sha256, says what each
// moved. The row commits before the entry that counts the call is
// appended, so no entry in the log lacks its amount; a row whose entry was
// never appended counts nothing.
type Amounts interface {
	KeepAmount(ctx context.Context, r store.Amount) error
	AmountsSince(ctx context.Context, since time.Time) (map[string]store.Amount, error)
	ForgetAmounts(ctx context.Context, before time.Time) error
}

// amountsKept is how long a row outlives its call. A row is needed while
// an entry of the last 24 hours names its call, and an entry can be
// written long after the call: a start records the outcome of a call the
// previous process left open (resume.go) however long the server was
// down. A week covers that; an older row only keeps the table small.
const amountsKept = 7 * 24 * time.Hour

// keepAmount stores what a counted call moves before any entry counts it
// (call.allowed, approval.requested). A call whose amount cannot be kept
// is refused and recorded: after a restart it would no longer count.
func (g *Guard) keepAmount(ctx context.Context, entry audit.Entry, canon digest.Args, v *tools.Value, counted *reservation, at time.Time) *mcp.CallToolResult {
	if v == nil || counted == nil || g.opts.Amounts == nil {
		return nil
	}
	err := g.keepValue(ctx, entry.Tool, canon.Hex(), v, at)
	if err == nil {
		return nil
	}
	g.usage.release(counted)
	g.log.Error("cannot keep the amount of a call for the usage windows", "tool", entry.Tool, "err", err)
	entry.Kind, entry.Decision, entry.Rule = vocab.KindCallDenied, string(vocab.LevelDeny), ""
	entry.Reason = "cannot keep the amount for the usage windows: " + err.Error()
	g.record(ctx, entry)
	return toolError("refused: cannot keep the amount this call moves for the usage windows (%v); try again", err)
}

// keepValue stores v, what a call of tool with arguments argsSHA256
// moves; a nil v (a backchannel action that moves nothing, counted as a
// call) is kept as a row with no currency.
func (g *Guard) keepValue(ctx context.Context, tool, argsSHA256 string, v *tools.Value, at time.Time) error {
	r := store.Amount{Tool: tool, ArgsSHA256: argsSHA256, At: at}
	if v != nil {
		r.Amount, r.Currency, r.Counterparty = v.Amount, v.Currency, v.Counterparty
	}
	return g.opts.Amounts.KeepAmount(context.WithoutCancel(ctx), r)
}

// keptValue is what a kept row says its call moved (see keepValue).
func keptValue(r store.Amount) *tools.Value {
	if r.Currency == "" {
		return nil
	}
	return &tools.Value{Amount: r.Amount, Currency: r.Currency, Counterparty: r.Counterparty}
}

// keptAmounts are the rows a rebuild may need, by store.AmountKey; nil
// without Options.Amounts.
func (g *Guard) keptAmounts(ctx context.Context) (map[string]store.Amount, error) {
	if g.opts.Amounts == nil {
		return nil, nil
	}
	return g.opts.Amounts.AmountsSince(ctx, g.now().Add(-amountsKept))
}

// RestoreUsage rebuilds the rolling record from the audit log's entries of
// the last 24 hours (oldest first), so that a restart does not reset what
// an agent has already moved: executed calls count, and so do requests
// still waiting for a human, and calls whose outcome a crash left unknown.
// What each moved comes from Options.Amounts, or for entries written
// before those were kept, from their logged arguments.
func (g *Guard) RestoreUsage(ctx context.Context, entries []audit.Entry) error {
	if a := g.opts.Amounts; a != nil {
		if err := a.ForgetAmounts(ctx, g.now().Add(-amountsKept)); err != nil {
			return err
		}
	}
	kept, err := g.keptAmounts(ctx)
	if err != nil {
		return err
	}
	pending := map[string]*reservation{}
	allowedArgs := map[int64]json.RawMessage{} // a routine call.executed names its call.allowed (args_seq)
	cutoff := g.now().Add(-usageHorizon)
	g.usage.mu.Lock()
	defer g.usage.mu.Unlock()
	for _, e := range entries {
		if e.Kind == vocab.KindCallAllowed && len(e.Args) > 0 {
			allowedArgs[e.Seq] = e.Args
		}
		if e.ArgsSeq != 0 && len(e.Args) == 0 {
			e.Args = allowedArgs[e.ArgsSeq]
			delete(allowedArgs, e.ArgsSeq)
		}
		at, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil || at.Before(cutoff) {
			continue
		}
		switch e.Kind {
		case vocab.KindApprovalRequested, vocab.KindCallExecuted, vocab.KindCallInterrupted:
			if e.Kind != vocab.KindApprovalRequested && e.RequestID != "" {
				delete(pending, e.RequestID) // its request already counts
				continue
			}
			// A routine call counts once it ran, or may have (interrupted).
			v := g.valueOf(ctx, e, kept)
			r := g.usage.add(keysOf(e.Agent, e.Tool, v), v, at)
			if e.Kind == vocab.KindApprovalRequested {
				pending[e.RequestID] = r
			}
		case vocab.KindApprovalDenied, vocab.KindApprovalExpired, vocab.KindApprovalCancelled, vocab.KindCallFailed:
			if r := pending[e.RequestID]; r != nil && e.RequestID != "" {
				g.usage.bump(r, -1)
				delete(pending, e.RequestID)
			}
		}
	}
	return nil
}

// valueOf is what a logged call moved: its kept row, or else what the tool
// makes of its logged arguments; nil when the tool moves nothing or
// neither was kept.
func (g *Guard) valueOf(ctx context.Context, e audit.Entry, kept map[string]store.Amount) *tools.Value {
	if r, ok := kept[store.AmountKey(e.Tool, e.ArgsSHA256)]; ok && e.ArgsSHA256 != "" {
		return keptValue(r)
	}
	spec, ok := g.opts.Catalog.Lookup(e.Tool)
	if !ok || len(e.Args) == 0 {
		return nil
	}
	var args map[string]any
	if json.Unmarshal(e.Args, &args) != nil {
		return nil
	}
	call, err := spec.Prepare(ctx, args)
	if err != nil {
		return nil
	}
	return call.Value
}
