// Package approval is the human countersignature: CIBA-style approval
// requests, WebAuthn enrollment and assertions, and the approver web page.
//
// A request moves through these states, each move one SQL transaction that
// checks the state it starts from, so two concurrent decisions cannot both
// win:
//
//	pending -> approved | denied | expired | cancelled
//	approved -> executed | failed | interrupted   (BeginExecution claims it once)
//
// A request's life outlives the process that raised it; [Service.Restart]
// says what a restart does with each state.
//
// An approver approves or denies by signing the action digest
// ([digest.Compute]) with a security key: the digest of (request, decision) is
// the WebAuthn challenge, so an assertion verifies for one request and one
// decision only. Every step is written to the audit log through a
// [Recorder]. State changes and the audit entries that describe them are
// written in the same transaction to an outbox table and then appended to the
// log; an approval does not count (Wait does not report it, BeginExecution
// refuses it) until its entries are in the log. If the log cannot be
// appended to, the step fails.
//
// Enrollment: the first key of an approver comes from a one-time link that an
// admin creates (`countersign approvers enroll ID`). Further keys also need a
// link, and the link's page first asks for an assertion from one of the
// approver's existing, unrevoked keys before it registers the new one. So a
// leaked link alone never adds a key to an approver who already has one.
//
// authorization_details shapes rendered specially (RFC 9396 objects; other
// types fall back to a generic rendering of their fields):
//
//	{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"},
//	 "creditorName":"Vendor X","debtorAccount":{"id":"operating"},"newCounterparty":true,
//	 "remittanceInformationUnstructured":"inv 42","idempotencyKey":"pay-1"}
//	{"type":"deployment","service":"api","version":"1.4.2","environment":"production"}
//	{"type":"secret_access","name":"prod-db-password","classification":"restricted"}
//	{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{"path":"/srv/a.txt","mode":420}}
//
// ("counterpartyKnown": false is accepted as well as "newCounterparty": true.)
//
// Every value is shown whole; a request whose display would exceed
// MaxShownValues, MaxShownChars or MaxShownBytes is refused (*ShowLimitError).
package approval

import (
	"context"
	"crypto/cipher"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/countersign/countersign/audit"
)

// Recorder is satisfied by *audit.Log. Every step is recorded; if Append
// fails, the step fails.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Options configure a Service. Zero durations get the defaults noted.
type Options struct {
	RPID, RPName string
	Origins      []string // exact origins, with port: "http://localhost:8710"
	PublicURL    string   // base of the links shown to people
	AllowedHosts []string // Host header allow-list for the page (DNS rebinding)
	Approvers    []Approver

	PollInterval time.Duration // CIBA interval; default 5s
	EnrollTTL    time.Duration // enrollment link lifetime; default 10m
	MaxBodyBytes int64         // approver page POST limit; default 64 KiB
	MaxBatch     int           // requests one tap may approve together; default DefaultMaxBatch
	Now          func() time.Time
	Logger       *slog.Logger // default: discard

	// Attestation asks keys at enrollment for an attestation ("direct")
	// or not ("none", the default). With AttestationRoots set, a key whose
	// attestation does not chain to one of them is refused.
	Attestation      string
	AttestationRoots *x509.CertPool

	// Notify, if set, is told of each event (EventRequested, ...) after it
	// is committed and logged. It runs on the caller's goroutine: it must
	// queue and return, never deliver. See approval/notify.go.
	Notify func(event string, r *Request)

	// RequireSignIn gates the page behind a WebAuthn sign-in (signin.go);
	// for a page reachable beyond loopback. SessionTTL: default 15m.
	RequireSignIn bool
	SessionTTL    time.Duration

	// ResultKey (32 bytes, DeriveResultKey) seals the results of approved
	// calls while they are kept; nil: a random key for this process
	// alone. ResultTTL is how long a result is kept after its run for the
	// agent to collect; default DefaultResultTTL (results.go).
	ResultKey []byte
	ResultTTL time.Duration
}

// Approver is a human who may countersign (from config).
type Approver struct {
	ID, Name string
	Roles    []string
}

// Request states.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
	StateExecuted  = "executed"
	StateFailed    = "failed"
	// StateInterrupted: the process died while the request ran and the
	// backend cannot tell whether it took effect; it is never run again.
	StateInterrupted = "interrupted"
)

// Errors callers can test with errors.Is.
var (
	ErrNotFound        = errors.New("approval: no such request")
	ErrInvalidRequest  = errors.New("approval: invalid request")
	ErrNotApproved     = errors.New("approval: request is not approved, or was already claimed")
	ErrNotExecuting    = errors.New("approval: request is not claimed for execution")
	ErrUnknownApprover = errors.New("approval: unknown approver")
	ErrEnrollment      = errors.New("approval: enrollment link is invalid, used or expired")
	ErrRecord          = errors.New("approval: audit log append failed")
	ErrClosed          = errors.New("approval: service closed")
)

// Service owns the approval tables, the WebAuthn relying party and the page.
type Service struct {
	db    *sql.DB
	rec   Recorder
	opts  Options
	wa    *webauthn.WebAuthn
	owner string // this process, for the outbox
	alive func() // releases the owner's liveness lock (owner.go)

	approvers map[string]Approver

	results      cipher.AEAD   // seals kept results (results.go)
	resultsSwept chan struct{} // closed when the result sweep ends

	flushMu sync.Mutex

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	// watched holds, per request, a channel closed at its next change:
	// thousands of waiters must not all wake (and re-read) whenever any
	// one request changes.
	watched map[string]chan struct{}
	hooks   []func(id string) // OnChange
	closed  bool

	stop  chan struct{}
	done  chan struct{}
	swept chan struct{} // closed when the ceremony sweep (visitor.go) ends

	freezesDone chan struct{} // closed when watchFreezes (freeze.go) ends
	frozenOnce  sync.Once
	frozenQ     *sql.Stmt // Frozen's query, prepared once
	frozenErr   error
}

// New creates the approval tables if needed and starts the expiry loop, so
// requests expire even when no page is open and nobody waits.
func New(ctx context.Context, db *sql.DB, rec Recorder, opts Options) (*Service, error) {
	if db == nil || rec == nil {
		return nil, errors.New("approval: db and recorder are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.EnrollTTL <= 0 {
		opts.EnrollTTL = 10 * time.Minute
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.RPName == "" {
		opts.RPName = "Countersign"
	}
	if opts.ResultTTL <= 0 {
		opts.ResultTTL = DefaultResultTTL
	}
	results, err := resultAEAD(opts.ResultKey)
	if err != nil {
		return nil, err
	}
	if len(opts.Origins) == 0 {
		return nil, errors.New("approval: at least one origin is required")
	}
	if opts.PublicURL == "" {
		opts.PublicURL = opts.Origins[0]
	}
	opts.PublicURL = strings.TrimRight(opts.PublicURL, "/")
	if len(opts.AllowedHosts) == 0 {
		for _, o := range opts.Origins {
			if u, err := url.Parse(o); err == nil && u.Host != "" {
				opts.AllowedHosts = append(opts.AllowedHosts, u.Host)
			}
		}
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID:                  opts.RPID,
		RPDisplayName:         opts.RPName,
		RPOrigins:             opts.Origins,
		AttestationPreference: protocol.PreferNoAttestation,
	})
	if err != nil {
		return nil, fmt.Errorf("approval: webauthn: %w", err)
	}
	s := &Service{
		db:        db,
		rec:       rec,
		opts:      opts,
		wa:        wa,
		owner:     uuid.NewString(),
		approvers: map[string]Approver{},
		changed:   make(chan struct{}),
		watched:   map[string]chan struct{}{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		results:   results,
	}
	for _, a := range opts.Approvers {
		if a.ID == "" {
			return nil, errors.New("approval: approver with empty id")
		}
		s.approvers[a.ID] = a
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	s.alive = s.holdOwner(ctx)
	// Entries another process left unflushed are appended now.
	if err := s.flush(ctx, true); err != nil {
		s.opts.Logger.Warn("approval: outbox flush at start failed", "err", err)
	}
	s.resultsSwept = make(chan struct{})
	go s.sweepResults(s.stop, s.resultsSwept)
	go s.expiryLoop()
	s.swept = make(chan struct{})
	go s.sweepCeremonies(s.stop, s.swept)
	s.freezesDone = make(chan struct{})
	go s.watchFreezes()
	return s, nil
}

// Close stops the expiry loop. It does not close the database.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	<-s.done
	<-s.resultsSwept
	s.alive()
	<-s.swept
	<-s.freezesDone
	if s.frozenQ != nil {
		s.frozenQ.Close()
	}
	return nil
}

func (s *Service) now() time.Time { return s.opts.Now() }

// notify wakes the event streams and the waiters on the requests ids,
// or, given no ids, every waiter.
func (s *Service) notify(ids ...string) {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	if len(ids) == 0 {
		for id := range s.watched {
			s.wake(id)
		}
	}
	for _, id := range ids {
		s.wake(id)
	}
	hooks := s.hooks
	s.mu.Unlock()
	for _, fn := range hooks {
		if len(ids) == 0 {
			fn("")
		}
		for _, id := range ids {
			fn(id)
		}
	}
}

// OnChange registers fn to be told, after each change, which request
// changed, or "" for a change that may concern any. It lets one watcher
// follow thousands of requests without a goroutine each. fn runs on the
// changing goroutine and must not block.
func (s *Service) OnChange(fn func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// unwatch forgets request id's channel once a waiter is done with it, so
// that ended requests leave nothing behind; any other waiter on it wakes
// and reads the request again.
func (s *Service) unwatch(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wake(id)
}

// wake closes and forgets request id's channel; s.mu is held.
func (s *Service) wake(id string) {
	if ch, ok := s.watched[id]; ok {
		close(ch)
		delete(s.watched, id)
	}
}

// changesOf returns a channel closed at request id's next change (or at a
// change notify could not attribute).
func (s *Service) changesOf(id string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.watched[id]
	if !ok {
		ch = make(chan struct{})
		s.watched[id] = ch
	}
	return ch
}

// changes returns a channel closed at the next change.
func (s *Service) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// approverName is the configured display name, or the id.
func (s *Service) approverName(id string) string {
	if a, ok := s.approvers[id]; ok && a.Name != "" {
		return a.Name
	}
	return id
}

func (s *Service) migrate(ctx context.Context) error {
	for _, stmt := range schema {
		if _, err := s.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("approval: create tables: %w", err)
		}
	}
	return s.migrateWaitMode(ctx)
}

var schema = []string{
	`CREATE TABLE IF NOT EXISTS approval_requests (
		id TEXT PRIMARY KEY,
		tool TEXT NOT NULL,
		agent TEXT NOT NULL,
		args BLOB NOT NULL,
		args_sha256 TEXT NOT NULL,
		redact_args INTEGER NOT NULL,
		authorization_details BLOB NOT NULL,
		summary TEXT NOT NULL,
		display TEXT NOT NULL,
		level TEXT NOT NULL,
		rule TEXT NOT NULL,
		approvers TEXT NOT NULL,
		quorum INTEGER NOT NULL,
		user_verification TEXT NOT NULL,
		code TEXT NOT NULL,
		binding_message TEXT NOT NULL,
		nonce BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		interval_ms INTEGER NOT NULL,
		state TEXT NOT NULL,
		decided_by TEXT NOT NULL DEFAULT '',
		decided_at INTEGER NOT NULL DEFAULT 0,
		reason TEXT NOT NULL DEFAULT '',
		exec_claimed_at INTEGER NOT NULL DEFAULT 0,
		result BLOB,
		last_poll INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE INDEX IF NOT EXISTS approval_requests_state ON approval_requests (state, expires_at)`,
	`CREATE TABLE IF NOT EXISTS approval_votes (
		request_id TEXT NOT NULL REFERENCES approval_requests(id),
		approver_id TEXT NOT NULL,
		credential_id BLOB NOT NULL,
		decision TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (request_id, approver_id, decision)
	)`,
	`CREATE TABLE IF NOT EXISTS approval_ceremonies (
		id TEXT PRIMARY KEY,
		kind TEXT NOT NULL,
		request_id TEXT NOT NULL DEFAULT '',
		enrollment BLOB,
		decision TEXT NOT NULL DEFAULT '',
		session BLOB NOT NULL,
		expires_at INTEGER NOT NULL,
		used INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE IF NOT EXISTS approval_used_assertions (
		hash BLOB PRIMARY KEY,
		request_id TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS approval_users (
		approver_id TEXT PRIMARY KEY,
		handle BLOB NOT NULL UNIQUE
	)`,
	`CREATE TABLE IF NOT EXISTS approval_credentials (
		id BLOB PRIMARY KEY,
		approver_id TEXT NOT NULL,
		credential BLOB NOT NULL,
		sign_count INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		last_used_at INTEGER NOT NULL DEFAULT 0,
		revoked_at INTEGER NOT NULL DEFAULT 0,
		revoke_reason TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE TABLE IF NOT EXISTS approval_enrollments (
		token_hash BLOB PRIMARY KEY,
		approver_id TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		verified_at INTEGER NOT NULL DEFAULT 0,
		verified_by BLOB,
		used_at INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE IF NOT EXISTS approval_outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		request_id TEXT NOT NULL DEFAULT '',
		entry BLOB NOT NULL,
		owner TEXT NOT NULL,
		created_at INTEGER NOT NULL
	)`,
	// The audit seq of each approver's approval.assertion entry, so the
	// approval.approved entry can name them: seqs are only known once the
	// outbox has appended the entries.
	`CREATE TABLE IF NOT EXISTS approval_logged_assertions (
		request_id TEXT NOT NULL,
		approver_id TEXT NOT NULL,
		seq INTEGER NOT NULL,
		PRIMARY KEY (request_id, approver_id)
	)`,
	createVoteAssertions,
	createResultIndex,
	createReconciled,
	createReconciledCalls,
	createNotified,
	createGrantOffers,
	createGrantCeremonies,
	createGrants,
	createBatchable,
	createFreezes,
	createFreezeChanges,
}

// outboxStaleAfter is how long another process's unflushed entries wait
// before this one appends them (that process probably died).
const outboxStaleAfter = 30 * time.Second

// enqueue adds an audit entry to the outbox inside tx.
func (s *Service) enqueue(ctx context.Context, tx *sql.Tx, requestID string, e audit.Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO approval_outbox (request_id, entry, owner, created_at) VALUES (?, ?, ?, ?)`,
		requestID, b, s.owner, s.now().UnixNano())
	return err
}

// flush appends outbox entries to the log in order, deleting each once it
// is appended. With stale, it also takes entries other processes left
// behind for longer than outboxStaleAfter.
func (s *Service) flush(ctx context.Context, stale bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	cutoff := int64(-1)
	dead := []any{}
	if stale {
		cutoff = s.now().Add(-outboxStaleAfter).UnixNano()
		var err error
		if dead, err = s.deadOwners(ctx); err != nil {
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, entry, owner, created_at FROM approval_outbox
		WHERE owner = ? OR created_at < ? OR owner IN (SELECT value FROM json_each(?)) ORDER BY id`,
		s.owner, cutoff, jsonArray(dead))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	type item struct {
		id      int64
		entry   []byte
		owner   string
		created int64
	}
	var items []item
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.id, &it.entry, &it.owner, &it.created); err != nil {
			rows.Close()
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
		items = append(items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	for _, it := range items {
		var e audit.Entry
		if err := json.Unmarshal(it.entry, &e); err != nil {
			return fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err)
		}
		if e.Kind == audit.KindApprovalApproved {
			if err := s.linkAssertions(ctx, &e); err != nil {
				return fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err)
			}
		}
		if e.Kind == audit.KindGrantRevoked && e.GrantSeq == 0 {
			if err := s.linkGrant(ctx, &e); err != nil {
				return fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err)
			}
		}
		// Another process may have appended it and died before deleting it.
		var logged audit.Entry
		found := false
		if it.owner != s.owner {
			if logged, found, err = s.inLog(ctx, e, it.created); err != nil {
				return fmt.Errorf("%w: %v", ErrRecord, err)
			}
		}
		if found {
			s.opts.Logger.Info("approval: an outbox entry left by a stopped process was already in the log", "kind", e.Kind, "request", e.RequestID, "seq", logged.Seq)
		} else if logged, err = s.rec.Append(ctx, e); err != nil {
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
		// A crash between the append and this transaction leaves the entry
		// to the next process, which finds it in the log (inLog) rather
		// than appending it again.
		err = s.inTx(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
			if e.Kind == audit.KindApprovalAssertion {
				if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO approval_logged_assertions (request_id, approver_id, seq) VALUES (?,?,?)`,
					e.RequestID, e.Approver, logged.Seq); err != nil {
					return err
				}
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM approval_outbox WHERE id = ?`, it.id)
			return err
		})
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
	}
	return nil
}

// linkAssertions fills an approval.approved entry's Assertions with the
// seqs of its approvers' approval.assertion entries. The outbox appends in
// order, so they are in the log by now.
func (s *Service) linkAssertions(ctx context.Context, e *audit.Entry) error {
	e.Assertions = nil
	for _, a := range e.Approvers {
		var seq int64
		err := s.db.QueryRowContext(ctx, `SELECT seq FROM approval_logged_assertions WHERE request_id = ? AND approver_id = ?`, e.RequestID, a).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			// Appended before seqs were recorded (by an older server,
			// for a request decided across the upgrade): find it in the
			// log itself.
			seq, err = s.findAssertion(ctx, e.RequestID, a)
		}
		if err != nil {
			return fmt.Errorf("the approval.assertion of %s for request %s: %w", a, e.RequestID, err)
		}
		e.Assertions = append(e.Assertions, seq)
	}
	return nil
}

// logReader is the part of *audit.Log that findAssertion reads with.
type logReader interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
}

// findAssertion scans the log for the latest approval.assertion of
// approver on request. It is slow and rarely needed.
func (s *Service) findAssertion(ctx context.Context, request, approver string) (int64, error) {
	lr, ok := s.rec.(logReader)
	if !ok {
		return 0, errors.New("not recorded, and the log cannot be searched")
	}
	var found, after int64
	for {
		page, err := lr.Since(ctx, after, 1000)
		if err != nil {
			return 0, err
		}
		for _, e := range page {
			if e.Kind == audit.KindApprovalAssertion && e.RequestID == request && e.Approver == approver {
				found = e.Seq
			}
			after = e.Seq
		}
		if len(page) < 1000 {
			break
		}
	}
	if found == 0 {
		return 0, errors.New("not in the log")
	}
	return found, nil
}

// record appends an entry that changes no state (a rejected assertion).
func (s *Service) record(ctx context.Context, e audit.Entry) error {
	if _, err := s.rec.Append(context.WithoutCancel(ctx), e); err != nil {
		s.opts.Logger.Error("approval: audit append failed", "kind", e.Kind, "err", err)
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	return nil
}

// inTx runs fn in one transaction (BEGIN IMMEDIATE through the store's
// _txlock), committing only when fn succeeds.
func (s *Service) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
