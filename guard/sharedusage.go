package guard

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// Replicas sharing one database must share the usage windows too: each
// with its own usageBook, N replicas would let a sum split between them
// through N times. With Options.SharedUsage a tool whose rules read usage
// is decided and counted in the database (store.UsageWindows): one
// transaction locks the keys its rules read, sums the windows, decides,
// and counts the call. Tools whose rules do not read usage stay in the
// usageBook: nothing decides on their windows, and they take no lock.
//
// A reservation lives in the table, but what gives it back (the
// *reservation held by a waiting call, the parked map or countWhileLive)
// lives in the process. When a replica dies or restarts with calls
// counted that never run (a pending request later denied, expired or
// cancelled; a call.allowed whose run never came), whoever settles what
// it left (Reap, or the next start's Resume) rebuilds their shares from
// the requests and open call.allowed entries (reapusage.go): the minutes
// just before the request's or entry's time (the exact one is not kept),
// keys from keysOf, the amount from Options.Amounts. Requests still waiting are parked with theirs, to
// give it back if they end without running; those the settling itself
// ends unrun (block-mode requests cancelled as "server restarted",
// claimed runs and routine calls settled as failed) give it back at
// once. Interrupted calls keep counting, as RestoreUsage counts them. A
// share with a call id is given back once for all replicas
// (ReleaseOnce). RestoreUsage itself keeps filling only the book: the
// table outlives a restart, so counting into it again would count
// twice.
//
// A backchannel request's actions are rebuilt too, from the amounts kept
// for them (shares.ofActions), and held until it ends (watchActions).
// Left over-counted (refusing more, never less): a dead replica's request
// that ended before anything resumed it, whose owner died before giving
// its share back.

// SharedUsage keeps usage windows in a database replicas share;
// *store.UsageWindows satisfies it.
type SharedUsage interface {
	Decide(ctx context.Context, lock [][]byte, windows []store.UsageWindow, horizon int64,
		decide func([]store.UsageSum) ([]store.UsageAdd, error)) error
	Add(ctx context.Context, adds []store.UsageAdd) error
	ReleaseOnce(ctx context.Context, id string, since int64, adds []store.UsageAdd, horizon int64) (bool, error)
}

// usageField is one field of the usage variable: the key it sums, over
// how long, and whether it sums calls or amounts.
type usageField struct {
	name   string
	key    func(usageKeys) string
	window time.Duration
	amount bool
}

// The fields are authz.UsageKeys, as facts computes them; a test holds
// the three together.
var usageFields = []usageField{
	{"calls_10m", func(k usageKeys) string { return k.calls }, 10 * time.Minute, false},
	{"calls_1h", func(k usageKeys) string { return k.calls }, time.Hour, false},
	{"agent_amount_1h", func(k usageKeys) string { return k.agent }, time.Hour, true},
	{"agent_amount_24h", func(k usageKeys) string { return k.agent }, usageHorizon, true},
	{"agent_payee_amount_24h", func(k usageKeys) string { return k.payee }, usageHorizon, true},
	{"total_amount_24h", func(k usageKeys) string { return k.total }, usageHorizon, true},
}

// decideCounting decides a call with decide, given its usage at now, and
// counts it unless decide denies it, as one step no other decision on
// the same windows interleaves with. It returns the usage decide saw.
// An error (the shared windows cannot be read or written) decides
// nothing: the caller refuses the call.
func (g *Guard) decideCounting(ctx context.Context, tool string, k usageKeys, v *tools.Value, now time.Time,
	decide func(usage map[string]any) authz.Decision) (map[string]any, authz.Decision, *reservation, error) {
	if g.opts.SharedUsage == nil || !g.opts.Policy.UsesUsage(tool) {
		g.usage.mu.Lock()
		defer g.usage.mu.Unlock()
		usage := g.usage.facts(k, now)
		d := decide(usage)
		var counted *reservation
		if d.Level != vocab.LevelDeny {
			counted = g.usage.add(k, v, now)
		}
		return usage, d, counted, nil
	}
	m := minuteOf(now)
	var read map[string]bool // nil: rules unknown, which may read every field
	if conf, ok := (*g.tools.Load())[tool]; ok {
		read = authz.UsageRead(conf.Rules)
	}
	var lock [][]byte
	var windows []store.UsageWindow
	var asked []usageField // the fields of windows, in order
	for _, f := range usageFields {
		key := f.key(k)
		if key == "" {
			continue // the call moves nothing: the field is 0
		}
		if (read == nil || read[f.name]) && !containsKey(lock, key) {
			lock = append(lock, []byte(key))
		}
		windows = append(windows, store.UsageWindow{Key: []byte(key), Since: m - int64(f.window/time.Minute) + 1})
		asked = append(asked, f)
	}
	var usage map[string]any
	var d authz.Decision
	var counted *reservation
	err := g.opts.SharedUsage.Decide(ctx, lock, windows, minuteOf(now.Add(-usageHorizon)), func(sums []store.UsageSum) ([]store.UsageAdd, error) {
		usage = make(map[string]any, len(usageFields))
		for _, f := range usageFields {
			usage[f.name] = 0.0
		}
		for i, f := range asked {
			usage[f.name] = sums[i].Calls
			if f.amount {
				usage[f.name] = sums[i].Amount
			}
		}
		d, counted = decide(usage), nil
		if d.Level == vocab.LevelDeny {
			return nil, nil
		}
		counted = &reservation{min: m, keys: k, shared: true}
		if v != nil {
			counted.amount = v.Amount
		}
		return counted.adds(1), nil
	})
	if err != nil {
		return nil, authz.Decision{}, nil, fmt.Errorf("shared usage windows: %w", err)
	}
	return usage, d, counted, nil
}

func containsKey(keys [][]byte, key string) bool {
	for _, k := range keys {
		if string(k) == key {
			return true
		}
	}
	return false
}

// adds are r's rows in the shared windows, times sign: one call in each
// key, and the amount in each amount key.
func (r *reservation) adds(sign int64) []store.UsageAdd {
	out := []store.UsageAdd{{Key: []byte(r.keys.calls), Minute: r.min, Calls: sign}}
	for _, key := range []string{r.keys.agent, r.keys.payee, r.keys.total} {
		if key != "" {
			out = append(out, store.UsageAdd{Key: []byte(key), Minute: r.min, Calls: sign, Amount: float64(sign) * r.amount})
		}
	}
	return out
}

// releaseShared gives a shared reservation back. It outlives the call's
// context (the call may be ending because it was cancelled); if the
// database refuses, the share stays counted until the window passes it,
// which refuses more, never less. A share whose call has an id is given
// back once for all replicas (store.UsageWindows.ReleaseOnce): its owner
// and a replica that rebuilt it after taking the owner for dead may both
// hold it. One without an id is its process's alone: nothing rebuilds a
// call that has neither a request nor a call.allowed entry.
func releaseShared(shared SharedUsage, log *slog.Logger, r *reservation, now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if r.id == "" {
		err = shared.Add(ctx, r.adds(-1))
	} else if horizon := minuteOf(now.Add(-usageHorizon)); r.min >= horizon {
		// Older than the horizon it counts in no window: nothing to give back.
		since := r.min
		if r.since != 0 {
			since = r.since
		}
		_, err = shared.ReleaseOnce(ctx, r.id, since, r.adds(-1), horizon)
	}
	if err != nil {
		log.Error("cannot give a call's share back to the shared usage windows; it counts until the window passes it", "err", err)
	}
}

// decideActionsShared decides a backchannel request's actions as their
// tools' calls against the shared windows, one transaction each, so
// each action is judged with those before it counted (as the book does
// under one lock). An action the windows cannot judge denies the
// request. It returns the combined decision and what it counted (the
// caller releases it if the request is refused).
func (g *Guard) decideActionsShared(ctx context.Context, b Backchannel, d authz.Decision, now time.Time) (authz.Decision, []*reservation) {
	var counted []*reservation
	for _, a := range b.Actions {
		keys := keysOf(b.Agent, a.Tool, a.Call.Value)
		_, ad, r, err := g.decideCounting(ctx, a.Tool, keys, a.Call.Value, now, func(usage map[string]any) authz.Decision {
			return g.opts.Policy.Decide(authz.Input{
				Tool: a.Tool, Agent: b.Agent, Args: a.Call.Args, Facts: a.Call.Facts, Now: now, Usage: usage,
			})
		})
		if err != nil {
			g.log.Error("cannot decide a backchannel action against the usage windows", "tool", a.Tool, "err", err)
			ad = authz.Decision{Level: vocab.LevelDeny, Reason: "cannot read the usage windows: " + err.Error()}
		}
		// One per action, nil or not: Raise names each by its index.
		counted = append(counted, r)
		d = authz.Combine(d, a.Tool, ad)
	}
	return d, counted
}
