package approval

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/approval/watch"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Standing grants (package grant): a request may come with a grant offer
// (NewRequest.Grant); its approver may, with the same tap, grant further
// calls matching it (BeginGrant), and the approval.assertion entry carries
// the grant. The guard takes one use per call (UseGrant); the page revokes
// (RevokeGrant).

// ErrGrantChoice refuses an approver's grant limits outside the offer.
var ErrGrantChoice = &ceremony.CheckError{Check: "grant"}

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
	return grant.PutOffer(ctx, tx, id, o)
}

// Offer returns the grant offered with a request, or nil.
func (s *Service) Offer(ctx context.Context, requestID string) (*grant.Offer, error) {
	return s.grants.Offered(ctx, requestID)
}

// BeginGrant starts the ceremony that approves a request and creates a
// grant with the approver's choice of duration and calls, which must be
// within the request's offer. Its challenge is the grant digest; it is
// finished with FinishDecision like any other decision.
func (s *Service) BeginGrant(ctx context.Context, requestID string, choice grant.Choice) (*DecisionOptions, error) {
	return s.beginDecision(ctx, requestID, vocab.Approve, &choice)
}

// chooseGrant checks the approver's choice against the request's offer and
// fixes the grant's terms.
func (s *Service) chooseGrant(ctx context.Context, r *row, c grant.Choice) (*grant.Terms, error) {
	o, err := s.Offer(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case o == nil:
		return nil, ceremony.Failf(ErrGrantChoice, "no grant is offered with this request (its tool allows none)")
	case r.Level != vocab.LevelHigh || r.Quorum != 1:
		return nil, ceremony.Failf(ErrGrantChoice, "a %s request with quorum %d cannot create a grant", r.Level, r.Quorum)
	case c.Calls < 1 || c.Calls > o.MaxCalls:
		return nil, ceremony.Failf(ErrGrantChoice, "calls must be 1 to %d (the policy's cap), got %d", o.MaxCalls, c.Calls)
	case c.Duration < time.Second || c.Duration > o.MaxDuration:
		return nil, ceremony.Failf(ErrGrantChoice, "duration must be 1s to %s (the policy's cap), got %s", o.MaxDuration, c.Duration)
	}
	// Whole seconds, as the digest writes it; rounded down, so never past
	// the cap.
	expires := s.now().Add(c.Duration).Truncate(time.Second)
	return &grant.Terms{ID: uuid.NewString(), Condition: o.Condition, MaxCalls: c.Calls, Expires: expires}, nil
}

// createGrant stores the grant an approval creates, in the approval's
// transaction, and puts its terms on the approval.assertion entry.
func (s *Service) createGrant(ctx context.Context, tx *sql.Tx, r *row, approver string, t *grant.Terms, e *audit.Entry, now time.Time) error {
	if r.Quorum != 1 {
		return ceremony.Failf(ErrGrantChoice, "a request with quorum %d cannot create a grant", r.Quorum)
	}
	if !now.Before(t.Expires) {
		return ceremony.Failf(ErrGrantChoice, "the grant chosen would have expired at %s, before the approval", digest.FormatTime(t.Expires))
	}
	if err := grant.Create(ctx, tx, t, r.ID, r.Agent, r.Tool, approver, now); err != nil {
		return err
	}
	e.GrantID, e.GrantCondition, e.GrantMaxCalls, e.GrantExpiresAt = t.ID, t.Condition, t.MaxCalls, digest.FormatTime(t.Expires)
	s.opts.Logger.Info("approval: grant created", "grant", t.ID, "request", r.ID, "approver", approver,
		"max_calls", t.MaxCalls, "expires_at", digest.FormatTime(t.Expires))
	return nil
}

// ActiveGrants returns the grants that may let a call of agent's to tool
// through now: logged, not revoked, not expired, not used up. The caller
// evaluates each one's condition, then takes a use with UseGrant.
func (s *Service) ActiveGrants(ctx context.Context, agent, tool string) ([]*grant.Grant, error) {
	return s.grants.Active(ctx, agent, tool, s.now())
}

// UseGrant takes one use of a grant for a call, in one transaction that
// checks, as of its own time, that the grant is logged, not revoked, not
// expired and not used up: of concurrent calls, at most MaxCalls get one.
// It returns grant.ErrGrantSpent when the grant cannot be used.
func (s *Service) UseGrant(ctx context.Context, id string) (*grant.Use, error) {
	var use *grant.Use
	// use is set by each run, so it is the committed run's.
	err := s.db.InTx(ctx, func(tx *sql.Tx) (err error) {
		// Taken under the write lock, so that the order of uses and a
		// revocation in time is their order in the database.
		if use, err = s.grants.Take(ctx, tx, id, s.now()); err != nil {
			return err
		}
		return watch.Announce(ctx, s.db, tx, "") // the page shows the uses left
	})
	if err != nil {
		return nil, err
	}
	s.notify()
	return use, nil
}

// Grants lists the grants for the page, newest first.
func (s *Service) Grants(ctx context.Context, limit int) ([]*grant.Grant, error) {
	return s.grants.Query(ctx, s.db, `TRUE ORDER BY g.created_at DESC LIMIT ?`, limit)
}

// RevokeGrant ends a grant at once and records grant.revoked with who
// revoked it (by: the signed-in approver, or the loopback page). A call
// that took a use before the revocation committed still runs; none after.
func (s *Service) RevokeGrant(ctx context.Context, id, by string) (*grant.Grant, error) {
	if !ceremony.ValidID(id) {
		return nil, grant.ErrNoGrant
	}
	err := s.db.InTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		gs, err := s.grants.Query(ctx, tx, `g.id = ?`, id)
		if err != nil {
			return err
		}
		if len(gs) != 1 {
			return grant.ErrNoGrant
		}
		g := gs[0]
		if err := grant.Revoke(ctx, tx, id, by, now); errors.Is(err, grant.ErrRevoked) {
			return fmt.Errorf("%w: grant %s was already revoked", ErrInvalidRequest, id)
		} else if err != nil {
			return err
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
	gs, err := s.grants.Query(ctx, s.db, `g.id = ?`, id)
	if err != nil || len(gs) != 1 {
		return nil, errors.Join(err, grant.ErrNoGrant)
	}
	return gs[0], nil
}

// RevokeGrantsOf revokes approver's grants in force, each with its grant.revoked (grant.Store.RevokeApprovedBy).
func (s *Service) RevokeGrantsOf(ctx context.Context, approver, by, reason string) ([]string, error) {
	ids, err := s.grants.RevokeApprovedBy(ctx, approver, by, reason, s.now(), freezeEnds{s})
	if err == nil && len(ids) > 0 {
		err = s.flush(ctx, false)
		s.notify()
	}
	return ids, err
}

// linkGrant fills a grant.revoked entry's grant_seq with the seq of the
// approval.assertion that created the grant, which the outbox appended
// before it.
func (s *Service) linkGrant(ctx context.Context, e *audit.Entry) error {
	gs, err := s.grants.Query(ctx, s.db, `g.id = ?`, e.GrantID)
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
