package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Standing grants. A request may come with a grant offer (NewRequest.Grant):
// a condition the server derived from it and the policy's caps. The
// approver who approves it may, with the same tap, grant that further
// calls matching the condition run without a new one, for a duration and
// a number of calls they choose within the caps (BeginGrant). The key then
// signs the grant digest (digest.ComputeGrant) instead of the plain action
// digest, and the approval.assertion entry carries the grant. A grant is
// in force once that approval is in the audit log, until it expires, is
// used up, or is revoked on the page (RevokeGrant). The guard takes one
// use per call (UseGrant), atomically, so concurrent calls never exceed
// the count.

// GrantOffer is what the approver of a request is offered.
type GrantOffer struct {
	Condition   string        // CEL over agent, tool and args, derived by the server
	MaxDuration time.Duration // the policy's cap
	MaxCalls    int           // the policy's cap
}

// GrantChoice is what the approver chose within the offer.
type GrantChoice struct {
	Duration time.Duration
	Calls    int
}

// Grant is a standing grant as stored.
type Grant struct {
	ID, RequestID      string
	Agent, Tool        string
	Approver           string // who granted it
	Condition          string
	MaxCalls, Used     int
	CreatedAt          time.Time
	ExpiresAt          time.Time
	RevokedAt          time.Time // zero while not revoked
	RevokedBy          string
	Seq                int64 // of the approval.assertion that created it; 0 until logged
	ApproverName       string
	RevokedByName      string
	requestApprovedLog bool
}

// Active reports whether the grant can still let a call through at now
// (once its approval is logged).
func (g *Grant) Active(now time.Time) bool {
	return g.RevokedAt.IsZero() && now.Before(g.ExpiresAt) && g.Used < g.MaxCalls
}

// GrantUse is one call a grant let through.
type GrantUse struct {
	Grant
	Use       int       // this call is the Use-th of MaxCalls
	DecidedAt time.Time // when the use was taken, inside its transaction
}

// Errors of grants.
var (
	ErrNoGrant = errors.New("approval: no such grant")
	// ErrGrantSpent: the grant is revoked, expired, used up or not yet
	// logged; the call must wait for a human.
	ErrGrantSpent  = errors.New("approval: the grant is no longer in force")
	ErrGrantChoice = &CheckError{Check: "grant"} // the chosen limits are outside the offer
)

const (
	createGrantOffers = `CREATE TABLE IF NOT EXISTS approval_grant_offers (
		request_id TEXT PRIMARY KEY,
		condition TEXT NOT NULL,
		max_duration_ms INTEGER NOT NULL,
		max_calls INTEGER NOT NULL
	)`
	createGrantCeremonies = `CREATE TABLE IF NOT EXISTS approval_grant_ceremonies (
		ceremony_id TEXT PRIMARY KEY,
		grant_id TEXT NOT NULL,
		max_calls INTEGER NOT NULL,
		expires_at INTEGER NOT NULL
	)`
	createGrants = `CREATE TABLE IF NOT EXISTS approval_grants (
		id TEXT PRIMARY KEY,
		request_id TEXT NOT NULL UNIQUE,
		agent TEXT NOT NULL,
		tool TEXT NOT NULL,
		approver TEXT NOT NULL,
		condition TEXT NOT NULL,
		max_calls INTEGER NOT NULL,
		used INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		revoked_at INTEGER NOT NULL DEFAULT 0,
		revoked_by TEXT NOT NULL DEFAULT ''
	)`
)

// grantTerms are a grant's signed terms: the challenge of the ceremony
// that creates it is their digest.
type grantTerms struct {
	id        string
	condition string
	maxCalls  int
	expires   time.Time // whole seconds
}

func (t *grantTerms) digest(action [32]byte) ([32]byte, error) {
	return digest.ComputeGrant(digest.Grant{Request: action, GrantID: t.id, Condition: t.condition, MaxCalls: t.maxCalls, ExpiresAt: t.expires})
}

// offerGrant stores a request's grant offer with it. Only a request one
// approver decides can carry one: a critical call always needs its quorum
// of fresh taps.
func (s *Service) offerGrant(ctx context.Context, tx *sql.Tx, id string, r NewRequest) error {
	o := r.Grant
	if o == nil {
		return nil
	}
	switch {
	case r.Level != vocab.LevelHigh || r.Quorum != 1:
		return fmt.Errorf("%w: a grant can be offered on a high request with one approver only, not %s with quorum %d", ErrInvalidRequest, r.Level, r.Quorum)
	case o.Condition == "" || o.MaxCalls < 1 || o.MaxDuration < time.Second:
		return fmt.Errorf("%w: a grant offer needs a condition, max calls and a max duration", ErrInvalidRequest)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_grant_offers (request_id, condition, max_duration_ms, max_calls) VALUES (?,?,?,?)`,
		id, o.Condition, o.MaxDuration.Milliseconds(), o.MaxCalls)
	return err
}

// Offer returns the grant offered with a request, or nil.
func (s *Service) Offer(ctx context.Context, requestID string) (*GrantOffer, error) {
	var o GrantOffer
	var ms int64
	err := s.db.QueryRowContext(ctx, `SELECT condition, max_duration_ms, max_calls FROM approval_grant_offers WHERE request_id = ?`, requestID).
		Scan(&o.Condition, &ms, &o.MaxCalls)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	o.MaxDuration = time.Duration(ms) * time.Millisecond
	return &o, nil
}

// BeginGrant starts the ceremony that approves a request and creates a
// grant with the approver's choice of duration and calls, which must be
// within the request's offer. Its challenge is the grant digest; it is
// finished with FinishDecision like any other decision.
func (s *Service) BeginGrant(ctx context.Context, requestID string, choice GrantChoice) (*DecisionOptions, error) {
	return s.beginDecision(ctx, requestID, vocab.Approve, &choice)
}

// chooseGrant checks the approver's choice against the request's offer and
// fixes the grant's terms.
func (s *Service) chooseGrant(ctx context.Context, r *row, c GrantChoice) (*grantTerms, error) {
	o, err := s.Offer(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case o == nil:
		return nil, failf(ErrGrantChoice, "no grant is offered with this request (its tool allows none)")
	case r.Level != vocab.LevelHigh || r.Quorum != 1:
		return nil, failf(ErrGrantChoice, "a %s request with quorum %d cannot create a grant", r.Level, r.Quorum)
	case c.Calls < 1 || c.Calls > o.MaxCalls:
		return nil, failf(ErrGrantChoice, "calls must be 1 to %d (the policy's cap), got %d", o.MaxCalls, c.Calls)
	case c.Duration < time.Second || c.Duration > o.MaxDuration:
		return nil, failf(ErrGrantChoice, "duration must be 1s to %s (the policy's cap), got %s", o.MaxDuration, c.Duration)
	}
	// Whole seconds, as the digest writes it; rounded down, so never past
	// the cap.
	expires := s.now().Add(c.Duration).Truncate(time.Second)
	return &grantTerms{id: uuid.NewString(), condition: o.Condition, maxCalls: c.Calls, expires: expires}, nil
}

func (s *Service) storeGrantCeremony(ctx context.Context, ceremony string, t *grantTerms) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO approval_grant_ceremonies (ceremony_id, grant_id, max_calls, expires_at) VALUES (?,?,?,?)`,
		ceremony, t.id, t.maxCalls, t.expires.Unix())
	return err
}

// grantCeremony returns the grant a decision ceremony creates, or nil.
func (s *Service) grantCeremony(ctx context.Context, ceremony string) (*grantTerms, error) {
	var t grantTerms
	var expires int64
	err := s.db.QueryRowContext(ctx, `SELECT g.grant_id, g.max_calls, g.expires_at, o.condition
		FROM approval_grant_ceremonies g JOIN approval_ceremonies c ON c.id = g.ceremony_id
		JOIN approval_grant_offers o ON o.request_id = c.request_id
		WHERE g.ceremony_id = ?`, ceremony).Scan(&t.id, &t.maxCalls, &expires, &t.condition)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t.expires = time.Unix(expires, 0).UTC()
	return &t, nil
}

// createGrant stores the grant an approval creates, in the approval's
// transaction, and puts its terms on the approval.assertion entry.
func (s *Service) createGrant(ctx context.Context, tx *sql.Tx, r *row, approver string, t *grantTerms, e *audit.Entry, now time.Time) error {
	if r.Quorum != 1 {
		return failf(ErrGrantChoice, "a request with quorum %d cannot create a grant", r.Quorum)
	}
	if !now.Before(t.expires) {
		return failf(ErrGrantChoice, "the grant chosen would have expired at %s, before the approval", digest.FormatTime(t.expires))
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_grants (id, request_id, agent, tool, approver, condition, max_calls, created_at, expires_at)
		VALUES (?,?,?,?,?,?,?,?,?)`, t.id, r.ID, r.Agent, r.Tool, approver, t.condition, t.maxCalls, now.UnixNano(), t.expires.Unix())
	if err != nil {
		return err
	}
	e.GrantID, e.GrantCondition, e.GrantMaxCalls, e.GrantExpiresAt = t.id, t.condition, t.maxCalls, digest.FormatTime(t.expires)
	s.opts.Logger.Info("approval: grant created", "grant", t.id, "request", r.ID, "approver", approver,
		"max_calls", t.maxCalls, "expires_at", digest.FormatTime(t.expires))
	return nil
}

// grantColumns read a Grant; logged says its approval (the assertion and
// approval.approved) is in the audit log, and seq is the assertion's.
const grantColumns = `g.id, g.request_id, g.agent, g.tool, g.approver, g.condition, g.max_calls, g.used, g.created_at, g.expires_at,
	g.revoked_at, g.revoked_by, COALESCE(l.seq, 0),
	NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = g.request_id
		AND json_extract(o.entry, '$.kind') IN ('approval.assertion', 'approval.approved'))
	FROM approval_grants g LEFT JOIN approval_logged_assertions l ON l.request_id = g.request_id AND l.approver_id = g.approver`

func (s *Service) scanGrant(sc scanner) (*Grant, error) {
	var g Grant
	var created, expires, revoked int64
	if err := sc.Scan(&g.ID, &g.RequestID, &g.Agent, &g.Tool, &g.Approver, &g.Condition, &g.MaxCalls, &g.Used,
		&created, &expires, &revoked, &g.RevokedBy, &g.Seq, &g.requestApprovedLog); err != nil {
		return nil, err
	}
	g.CreatedAt = time.Unix(0, created).UTC()
	g.ExpiresAt = time.Unix(expires, 0).UTC()
	if revoked != 0 {
		g.RevokedAt = time.Unix(0, revoked).UTC()
	}
	g.ApproverName = s.approverName(g.Approver)
	if g.RevokedBy != "" {
		g.RevokedByName = s.approverName(g.RevokedBy)
	}
	return &g, nil
}

func (s *Service) queryGrants(ctx context.Context, q querier, where string, args ...any) ([]*Grant, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+grantColumns+` WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Grant
	for rows.Next() {
		g, err := s.scanGrant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// ActiveGrants returns the grants that may let a call of agent's to tool
// through now: logged, not revoked, not expired, not used up. The caller
// evaluates each one's condition, then takes a use with UseGrant.
func (s *Service) ActiveGrants(ctx context.Context, agent, tool string) ([]*Grant, error) {
	gs, err := s.queryGrants(ctx, s.db, `g.agent = ? AND g.tool = ? AND g.revoked_at = 0 AND g.used < g.max_calls AND g.expires_at > ?
		ORDER BY g.created_at`, agent, tool, s.now().Unix())
	if err != nil {
		return nil, err
	}
	var out []*Grant
	for _, g := range gs {
		if g.requestApprovedLog && g.Seq != 0 {
			out = append(out, g)
		}
	}
	return out, nil
}

// UseGrant takes one use of a grant for a call, in one transaction that
// checks, as of its own time, that the grant is logged, not revoked, not
// expired and not used up: of concurrent calls, at most MaxCalls get one.
// It returns ErrGrantSpent when the grant cannot be used.
func (s *Service) UseGrant(ctx context.Context, id string) (*GrantUse, error) {
	var use *GrantUse
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Taken under the write lock, so that the order of uses and a
		// revocation in time is their order in the database.
		now := s.now()
		res, err := tx.ExecContext(ctx, `UPDATE approval_grants SET used = used + 1
			WHERE id = ? AND revoked_at = 0 AND used < max_calls AND expires_at * 1000000000 > ?`, id, now.UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrGrantSpent
		}
		gs, err := s.queryGrants(ctx, tx, `g.id = ?`, id)
		if err != nil {
			return err
		}
		if len(gs) != 1 || !gs[0].requestApprovedLog || gs[0].Seq == 0 {
			return ErrGrantSpent // rolled back: the use is not taken
		}
		use = &GrantUse{Grant: *gs[0], Use: gs[0].Used, DecidedAt: now}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.notify()
	return use, nil
}

// Grants lists the grants for the page, newest first.
func (s *Service) Grants(ctx context.Context, limit int) ([]*Grant, error) {
	return s.queryGrants(ctx, s.db, `1 ORDER BY g.created_at DESC LIMIT ?`, limit)
}

// RevokeGrant ends a grant at once and records grant.revoked with who
// revoked it (by: the signed-in approver, or the loopback page). A call
// that took a use before the revocation committed still runs; none after.
func (s *Service) RevokeGrant(ctx context.Context, id, by string) (*Grant, error) {
	if !validID(id) {
		return nil, ErrNoGrant
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		gs, err := s.queryGrants(ctx, tx, `g.id = ?`, id)
		if err != nil {
			return err
		}
		if len(gs) != 1 {
			return ErrNoGrant
		}
		g := gs[0]
		res, err := tx.ExecContext(ctx, `UPDATE approval_grants SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at = 0`, now.UnixNano(), by, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: grant %s was already revoked", ErrInvalidRequest, id)
		}
		reason := fmt.Sprintf("revoked on the approver page after %d of %d calls", g.Used, g.MaxCalls)
		// Not queued under the request's id: that would hold back its
		// approval's other entries (see rowColumns). A grant whose
		// approval is not logged yet gets its grant_seq when the outbox
		// appends this entry, after the approval (linkGrant).
		return s.enqueue(ctx, tx, "", audit.Entry{
			Kind: vocab.KindGrantRevoked, Agent: g.Agent, Tool: g.Tool, GrantID: g.ID, GrantSeq: g.Seq,
			Approver: by, DecidedAt: now.UTC().Format(audit.TimeFormat), Reason: reason,
		})
	})
	if err != nil {
		return nil, err
	}
	if err := s.flush(ctx, false); err != nil {
		return nil, err
	}
	s.notify()
	s.opts.Logger.Info("approval: grant revoked", "grant", id, "by", by)
	gs, err := s.queryGrants(ctx, s.db, `g.id = ?`, id)
	if err != nil || len(gs) != 1 {
		return nil, errors.Join(err, ErrNoGrant)
	}
	return gs[0], nil
}

// linkGrant fills a grant.revoked entry's grant_seq with the seq of the
// approval.assertion that created the grant, which the outbox appended
// before it.
func (s *Service) linkGrant(ctx context.Context, e *audit.Entry) error {
	gs, err := s.queryGrants(ctx, s.db, `g.id = ?`, e.GrantID)
	if err != nil {
		return err
	}
	if len(gs) != 1 || gs[0].Seq == 0 {
		return fmt.Errorf("the approval that created grant %s is not in the log", e.GrantID)
	}
	e.GrantSeq = gs[0].Seq
	return nil
}

// LoopbackRevoker is who a revocation is recorded as when the page needs
// no sign-in (loopback): revoking only takes authority away, so anyone who
// can reach the page may do it, as anyone there may deny a request.
const LoopbackRevoker = "loopback-page"
