// Package approval is the human countersignature: CIBA-style approval
// requests, their states and decisions, and the outbox that writes every
// step to the audit log. What surrounds them has a package each:
// approval/ceremony (the WebAuthn relying party: keys, enrollment links,
// the checks an assertion must pass), approval/grant (standing grants),
// approval/freeze (the kill switch's record), approval/reconcile (findings
// about interrupted calls), approval/sealed (results sealed at rest),
// approval/watch (waking waiters), and approval/page, the web page through
// which people answer requests, over this package's exported methods.
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
package approval

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/approval/outbox"
	"github.com/countersign/countersign/approval/reconcile"
	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/approval/watch"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"
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
	Approvers    []Approver
	People       *identity.People // those the identity provider signed in: approvers too

	PollInterval time.Duration // CIBA interval; default 5s
	EnrollTTL    time.Duration // enrollment link lifetime; default 10m
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
	// ResultKey (32 bytes, sealed.DeriveKey) seals the results of approved
	// calls while they are kept (nil: a random key for this process alone);
	// RetiredResultKeys, of server keys rotated away, open those sealed
	// before. ResultTTL: how long a result is kept (sealed.DefaultTTL).
	ResultKey         []byte
	RetiredResultKeys [][]byte
	ResultTTL         time.Duration

	// Owner, if set, is this process's owner id, whose liveness lock the
	// caller holds in Owners (the daemon's replica row, so that a fenced
	// replica's approval writes are refused and it exits); unset: the
	// Service makes an id and holds its lock itself.
	Owner string

	// Owners tells the processes sharing the database dead or alive: on
	// PostgreSQL the replicas table (store.OwnersFor), which the daemon
	// opens once; nil: store.OwnersOf (SQLite's lock files; on
	// PostgreSQL nobody can be told dead and recovery acts as if this
	// process were alone).
	Owners *store.Owners
}

// Approver is a human who may countersign (from config).
type Approver struct {
	ID, Name string
	Roles    []string
}

// Errors callers can test with errors.Is.
var (
	ErrNotFound       = errors.New("approval: no such request")
	ErrInvalidRequest = errors.New("approval: invalid request")
	ErrNotApproved    = errors.New("approval: request is not approved, or was already claimed")
	ErrNotExecuting   = errors.New("approval: request is not claimed for execution")
	ErrRecord         = outbox.ErrRecord
	ErrClosed         = errors.New("approval: service closed")
)

// Service owns the approval tables, the WebAuthn relying party and the page.
type Service struct {
	db     *store.DB
	rec    Recorder
	opts   Options
	keys   *ceremony.RP  // the WebAuthn relying party: keys, links, ceremonies
	owner  string        // this process, for the outbox
	owners *store.Owners // tells the outbox's owners dead or alive (owner.go)
	alive  func()        // releases the owner's liveness lock

	approvers atomic.Pointer[map[string]Approver] // by id, swapped whole by SetApprovers

	results *sealed.Box // seals kept results (results.go)

	// The sweeps of shared rows run where this replica leads them (sweeps.go).
	stopSweeps     context.CancelFunc
	sweepsDone     chan struct{} // closed when leadSweeps ends
	leadingSweeps  atomic.Bool   // this replica runs the sweeps now
	expiredBySweep atomic.Int64  // requests the expiry loop expired here

	ob *outbox.Outbox // where entries wait for the log (approval/outbox)

	watch  *watch.Hub // wakes waiters when a request changes
	mu     sync.Mutex
	closed bool

	stop chan struct{}
	done chan struct{}

	stopPeers context.CancelFunc // stops hearing other replicas' changes (watch.Listen)

	freezesDone chan struct{} // closed when watchFreezes (freeze.go) ends
	frozen      *freeze.Reader
	grants      *grant.Store
}

// New creates the approval tables if needed and starts the expiry loop, so
// requests expire even when no page is open and nobody waits.
func New(ctx context.Context, db *store.DB, rec Recorder, opts Options) (*Service, error) {
	if db == nil || rec == nil {
		return nil, errors.New("approval: db and recorder are required")
	}
	opts.setDefaults()
	results, err := sealed.NewBox(opts.ResultKey, opts.RetiredResultKeys...)
	if err != nil {
		return nil, err
	}
	if err := opts.deriveAddresses(); err != nil {
		return nil, err
	}
	s := &Service{
		db:      db,
		rec:     rec,
		opts:    opts,
		owner:   cmp.Or(opts.Owner, uuid.NewString()),
		watch:   watch.New(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		results: results,
	}
	s.SetApprovers(opts.Approvers)
	if err := s.openParts(ctx); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// openParts opens the packages that keep the service's other tables (the
// WebAuthn relying party, grants, freezes, findings), creating every
// table if needed.
func (s *Service) openParts(ctx context.Context) (err error) {
	o := s.opts
	s.keys, err = ceremony.New(ctx, s.db, ceremony.Config{
		RPID: o.RPID, RPName: o.RPName, Origins: o.Origins,
		EnrollTTL: o.EnrollTTL, Now: o.Now, Logger: o.Logger,
		Attestation: o.Attestation, AttestationRoots: o.AttestationRoots, People: o.People,
		Approver: func(id string) (string, bool) {
			a, ok := (*s.approvers.Load())[id]
			return a.Name, ok
		},
	})
	if err != nil {
		return err
	}
	if s.grants, err = grant.New(ctx, s.db, s.approverName); err != nil {
		return err
	}
	s.frozen = freeze.NewReader(s.db)
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if err := freeze.Migrate(ctx, s.db); err != nil {
		return err
	}
	return reconcile.Migrate(ctx, s.db)
}

// setDefaults gives zero options their defaults.
func (o *Options) setDefaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.EnrollTTL <= 0 {
		o.EnrollTTL = 10 * time.Minute
	}
	if o.RPName == "" {
		o.RPName = "Countersign"
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = sealed.DefaultTTL
	}
}

// deriveAddresses derives the public URL of the links, when unset, from
// the origins, of which there must be one at least.
func (o *Options) deriveAddresses() error {
	if len(o.Origins) == 0 {
		return errors.New("approval: at least one origin is required")
	}
	if o.PublicURL == "" {
		o.PublicURL = o.Origins[0]
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	return nil
}

// start takes this process's liveness lock, appends what another process
// left in the outbox, and starts the background loops Close stops.
func (s *Service) start(ctx context.Context) error {
	s.owners = s.opts.Owners
	if s.owners == nil {
		s.owners = store.OwnersOf(ctx, s.db)
	}
	s.ob = outbox.New(outbox.Config{DB: s.db, Recorder: s.rec, Owner: s.owner, Owners: s.owners,
		Now: s.now, Logger: s.opts.Logger, LinkGrant: s.linkGrant})
	var err error
	if s.alive, err = s.holdOwner(ctx); err != nil {
		return err
	}
	peers, stopPeers := context.WithCancel(context.WithoutCancel(ctx))
	s.stopPeers = stopPeers
	s.watch.Listen(peers, s.db, s.opts.Logger)
	// Entries another process left unflushed are appended now.
	if err := s.flush(ctx, true); err != nil {
		s.opts.Logger.Warn("approval: outbox flush at start failed", "err", err)
	}
	s.startSweeps(ctx)
	go s.expiryLoop()
	s.freezesDone = make(chan struct{})
	go s.watchFreezes()
	return nil
}

// Close stops the expiry loop and the sweeps. It does not close the database.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	if s.stopPeers != nil {
		s.stopPeers()
	}
	<-s.done
	s.stopSweeps()
	<-s.sweepsDone
	s.ob.Wait() // the outbox's deletes, before another process may take its entries
	s.alive()
	<-s.freezesDone
	s.frozen.Close()
	return nil
}

func (s *Service) now() time.Time { return s.opts.Now() }

// notify wakes this process's waiters on the requests ids, or, given no
// ids, every waiter, once the change is committed (and logged). The other
// replicas heard of it from the transaction that made it (enqueue,
// watch.Announce).
func (s *Service) notify(ids ...string) { s.watch.Notify(ids...) }

// OnChange registers fn to be told, after each change, which request
// changed, or "" for a change that may concern any. It lets one watcher
// follow thousands of requests without a goroutine each. fn runs on the
// changing goroutine and must not block.
func (s *Service) OnChange(fn func(id string)) { s.watch.OnChange(fn) }

// SetApprovers puts a reload's approvers in force: one removed can no longer sign in or approve.
// An empty id is nobody's (config refuses it).
func (s *Service) SetApprovers(approvers []Approver) {
	m := map[string]Approver{}
	for _, a := range approvers {
		if a.ID != "" {
			m[a.ID] = a
		}
	}
	s.approvers.Store(&m)
}

func (s *Service) approverName(id string) string { return cmp.Or((*s.approvers.Load())[id].Name, id) }
