// Package freeze keeps the kill switch's record: which agents are frozen
// (or all of them, AllAgents), by whom, since when and why, and a counter
// of freezes and unfreezes that other processes poll to learn of one.
//
// It records nothing in the audit log: package approval writes a freeze
// in the transaction that records it, and ends what the freeze holds
// (pending requests, standing grants) as Stop picks them (enforce.go);
// the guard asks it before every call.
package freeze

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/store"
)

// AllAgents is the agent name of a freeze of every agent (--all).
const AllAgents = "*"

// Freeze is one agent's freeze as stored.
type Freeze struct {
	Agent  string // AllAgents for every agent
	By     string // who froze it: the signed-in approver, approval.LoopbackRevoker, or the CLI's "cli:USER"
	At     time.Time
	Reason string
}

// ErrAgentFrozen is what errors.Is finds in a *FrozenError.
var ErrAgentFrozen = errors.New("approval: agent is frozen")

// ErrNotFrozen: Unfreeze of an agent that is not frozen.
var ErrNotFrozen = errors.New("approval: agent is not frozen")

// FrozenError refuses something an agent's freeze forbids. Its text is
// what the agent is told.
type FrozenError struct{ Freeze Freeze }

func (e *FrozenError) Error() string {
	f := e.Freeze
	at := f.At.UTC().Format(time.RFC3339)
	if f.Agent == AllAgents {
		return fmt.Sprintf("all agents are frozen by %s since %s; an admin can run `countersign agents unfreeze --all`", f.By, at)
	}
	return fmt.Sprintf("agent %s is frozen by %s since %s; an admin can run `countersign agents unfreeze %s`", f.Agent, f.By, at, f.Agent)
}

func (e *FrozenError) Is(target error) bool { return target == ErrAgentFrozen }

// Err is f as an error, or nil.
func Err(f *Freeze) error {
	if f == nil {
		return nil
	}
	return &FrozenError{Freeze: *f}
}

// agentName is what may be frozen: a configured agent id (config.ValidID),
// or one of the names the server gives callers it cannot name otherwise
// ("anonymous", "unknown", which match it too).
var agentName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ValidAgent reports whether name can be frozen.
func ValidAgent(name string) bool { return name == AllAgents || agentName.MatchString(name) }

// Migrate creates the freeze tables if needed.
func Migrate(ctx context.Context, db *store.DB) error {
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS agent_freezes (
			agent TEXT PRIMARY KEY,
			frozen_by TEXT NOT NULL,
			frozen_at INTEGER NOT NULL,
			reason TEXT NOT NULL DEFAULT ''
		)`,
		// One row counting every freeze and unfreeze: what another
		// process polls to learn that one happened.
		`CREATE TABLE IF NOT EXISTS agent_freeze_changes (
			id INTEGER PRIMARY KEY CHECK (id = 1),
			n INTEGER NOT NULL
		)`,
	} {
		if err := db.CreateTables(ctx, stmt); err != nil {
			return fmt.Errorf("approval: create tables: %w", err)
		}
	}
	return nil
}

// query finds the freeze that holds an agent: its own, else --all.
const query = `SELECT agent, frozen_by, frozen_at, reason FROM agent_freezes WHERE agent IN (?, '*') ORDER BY agent = '*' LIMIT 1`

type scanner interface{ Scan(...any) error }

func scan(sc scanner) (*Freeze, error) {
	var f Freeze
	var at int64
	if err := sc.Scan(&f.Agent, &f.By, &at, &f.Reason); err != nil {
		return nil, err
	}
	f.At = time.Unix(0, at).UTC()
	return &f, nil
}

// Querier is a database or a transaction.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// In returns the freeze that holds agent, read through q (a transaction
// that must see its own writes), or nil.
func In(ctx context.Context, q Querier, agent string) (*Freeze, error) {
	f, err := scan(q.QueryRowContext(ctx, query, agent))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return f, err
}

// Reader answers "is this agent frozen?" for every call: one indexed read
// of a table that is usually empty, its query prepared once (parsing it
// was half of the check's cost). It reads the database every time, so a
// freeze written by another process holds from the next call on.
type Reader struct {
	db   *store.DB
	once sync.Once
	stmt *sql.Stmt
	err  error
}

// NewReader returns a Reader of db.
func NewReader(db *store.DB) *Reader { return &Reader{db: db} }

// Frozen returns the freeze that holds agent, or nil.
func (r *Reader) Frozen(ctx context.Context, agent string) (*Freeze, error) {
	r.once.Do(func() { r.stmt, r.err = r.db.PrepareContext(context.Background(), query) })
	if r.err != nil {
		return nil, r.err
	}
	f, err := scan(r.stmt.QueryRowContext(ctx, agent))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return f, err
}

// Close releases the prepared query.
func (r *Reader) Close() {
	if r.stmt != nil {
		r.stmt.Close()
	}
}

// List lists the freezes in force, oldest first.
func List(ctx context.Context, q Querier) ([]Freeze, error) {
	rows, err := q.QueryContext(ctx, `SELECT agent, frozen_by, frozen_at, reason FROM agent_freezes ORDER BY frozen_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Freeze
	for rows.Next() {
		f, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *f)
	}
	return out, rows.Err()
}

// Put stores f inside tx. An agent already frozen is left as it is: the
// existing freeze is returned in a *FrozenError.
func Put(ctx context.Context, tx *sql.Tx, f Freeze) error {
	existing, err := scan(tx.QueryRowContext(ctx, `SELECT agent, frozen_by, frozen_at, reason FROM agent_freezes WHERE agent = ?`, f.Agent))
	if err == nil {
		return &FrozenError{Freeze: *existing}
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO agent_freezes (agent, frozen_by, frozen_at, reason) VALUES (?,?,?,?)`,
		f.Agent, f.By, f.At.UnixNano(), f.Reason); err != nil {
		return err
	}
	return bump(ctx, tx)
}

// Lift removes agent's freeze inside tx (AllAgents: the freeze of every
// agent; freezes of single agents stay); ErrNotFrozen if there is none.
func Lift(ctx context.Context, tx *sql.Tx, agent string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM agent_freezes WHERE agent = ?`, agent)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("%w: %s", ErrNotFrozen, agent)
	}
	return bump(ctx, tx)
}

func bump(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO agent_freeze_changes (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = agent_freeze_changes.n + 1`)
	return err
}

// Changes counts the freezes and unfreezes ever committed, by any process:
// when it moves, one happened.
func Changes(ctx context.Context, db *store.DB) (int64, error) {
	var n int64
	err := db.QueryRowContext(ctx, `SELECT n FROM agent_freeze_changes WHERE id = 1`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// Poll is how often Watch looks for a freeze another process committed,
// for that process to end the waits and grants it holds. Calls need no
// poll: the guard reads the freeze for each one.
const Poll = 200 * time.Millisecond

// retryBackoff spaces the calls of a changed that fails (it writes: a
// full disk fails it until there is room), so that it, and the line it
// logs, come once per step rather than at every poll.
var retryBackoff = store.Backoff{First: Poll, Max: 30 * time.Second}

// Watch calls changed whenever Changes moves, whichever process committed
// the freeze or unfreeze, and once at the start if any was ever made,
// until stop is closed. A changed that fails is called again after a
// back-off (retryBackoff).
func Watch(db *store.DB, stop <-chan struct{}, changed func(context.Context) error, log *slog.Logger) {
	ctx := context.Background()
	last := int64(-1)
	t := time.NewTicker(Poll)
	defer t.Stop()
	failed, retryAt := 0, time.Time{}
	for {
		n, err := Changes(ctx, db)
		switch {
		case err != nil:
			log.Warn("approval: cannot read freezes", "err", err)
		case n != last && time.Now().Before(retryAt):
			// backing off after a failed changed
		case n != last:
			if (last >= 0 || n > 0) && changed(ctx) != nil {
				failed++
				retryAt = time.Now().Add(retryBackoff.Pause(failed))
				n = last // try again
			} else {
				failed = 0
			}
			last = n
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// View is the page's view of a freeze.
type View struct {
	Agent    string    `json:"agent"`
	FrozenBy string    `json:"frozenBy"`
	FrozenAt time.Time `json:"frozenAt"`
	Reason   string    `json:"reason,omitempty"`
}

// AgentView is one agent the page can freeze: one seen in a pending
// request or a grant in force, or a frozen one.
type AgentView struct {
	Name   string `json:"name"`
	Frozen *View  `json:"frozen,omitempty"`
}

// View is the page's view of the freeze.
func (f *Freeze) View() *View {
	return &View{Agent: f.Agent, FrozenBy: f.By, FrozenAt: f.At, Reason: f.Reason}
}

// Agents lists the agents the page shows: frozen, with pending requests,
// or with grants in force at now (read from approval's and grant's
// tables); the freeze of every agent comes first, as AllAgents.
func Agents(ctx context.Context, db *store.DB, now time.Time) ([]AgentView, error) {
	rows, err := db.QueryContext(ctx, `SELECT agent FROM agent_freezes
		UNION `+pending.Agents+`
		UNION SELECT agent FROM approval_grants WHERE revoked_at = 0 AND used < max_calls AND expires_at > ?
		ORDER BY 1`, now.Unix())
	if err != nil {
		return nil, err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := []AgentView{}
	for _, n := range names {
		f, err := In(ctx, db, n)
		if err != nil {
			return nil, err
		}
		a := AgentView{Name: n}
		if f != nil { // its own freeze, or that of every agent
			a.Frozen = f.View()
		}
		out = append(out, a)
	}
	return out, nil
}
