// Package approval is the human countersignature: CIBA-style approval
// requests, WebAuthn enrollment and assertions, decisions and their outbox
// to the audit log. The web page through which people answer them is
// package approval/page, which works over this package's exported methods.
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
// authzdetails.MaxShownValues, MaxShownChars or MaxShownBytes is refused
// (*authzdetails.ShowLimitError). The rendering itself is authzdetails'.
package approval

import (
	"context"
	"crypto/cipher"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
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
	Approvers    []Approver

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
	opts.setDefaults()
	results, err := resultAEAD(opts.ResultKey)
	if err != nil {
		return nil, err
	}
	if err := opts.deriveAddresses(); err != nil {
		return nil, err
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
	s.start(ctx)
	return s, nil
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
		o.ResultTTL = DefaultResultTTL
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
func (s *Service) start(ctx context.Context) {
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

// approverName is the configured display name, or the id.
func (s *Service) approverName(id string) string {
	if a, ok := s.approvers[id]; ok && a.Name != "" {
		return a.Name
	}
	return id
}
