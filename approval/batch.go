package approval

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"slices"
	"strings"

	"github.com/go-webauthn/webauthn/protocol"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Batch approval: against fatigue, an approver may approve several pending
// requests with one tap. The page shows every selected request in full,
// then asks for one assertion whose challenge is [digest.BatchChallenge] of
// their action digests (decision approve), sorted. So the tap approves
// exactly that set, each as it was shown: a different selection has a
// different challenge, and no request's digest can be swapped in or out.
//
// Only requests the policy raised batchable may be batched (a tool's
// batchable: true, at level high; critical never); at most
// Options.MaxBatch of them; all pending; and the key's approver must be
// eligible for, and not yet counted on, every one. The server verifies the
// assertion with the same checks as a single decision (verifyAssertion),
// then counts it on every request in one transaction: all are approved
// (or count towards their quorum), or none. Each request's
// approval.assertion entry carries the assertion, the batch's digests
// and its position among them, which `audit verify` checks.
//
// Deny is not batched: a denial ends a request, and denying is not where
// fatigue lies; each denial keeps its own tap on the request's page.

// Batch refusals, besides the checks of decide.go.
var (
	ErrNotBatchable = &ceremony.CheckError{Check: "not_batchable", Words: "a request of the batch may not be approved in a batch"}            // request is critical or its tool not batchable
	ErrBatchSize    = &ceremony.CheckError{Check: "batch_size", Words: "the batch is empty, repeats a request or is over approval.max_batch"} // empty, repeated or over Options.MaxBatch
)

// DefaultMaxBatch is Options.MaxBatch when it is 0.
const DefaultMaxBatch = 10

// createBatchable keeps which requests were raised batchable: a row per
// batchable request, written with it. Its own table, so that requests
// raised before batches existed read as not batchable without a migration.
const createBatchable = `CREATE TABLE IF NOT EXISTS approval_batchable (
	request_id TEXT PRIMARY KEY REFERENCES approval_requests(id)
)`

// batchSet is the requests one assertion approves, in batch order.
type batchSet struct {
	rows      []*row   // ordered by their action digests
	digests   []string // the digests, hex, in that order
	challenge [32]byte
}

// batchPlace is one request's place in a batch, for its audit entry.
type batchPlace struct {
	digests  []string
	position int
}

// BatchOptions is what the page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON for a batch: the
// ceremony and the requests it approves, in batch order.
type BatchOptions struct {
	Ceremony  string                                     `json:"ceremony"`
	Requests  []string                                   `json:"requests"`
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
}

func (s *Service) maxBatch() int {
	if s.opts.MaxBatch <= 0 {
		return DefaultMaxBatch
	}
	return s.opts.MaxBatch
}

// batchKey checks a selection's shape and names it: its ids sorted and
// joined, which is how its ceremony is stored, so that a ceremony can only
// be finished for the selection it was begun for.
func (s *Service) batchKey(ids []string) (string, error) {
	if len(ids) == 0 || len(ids) > s.maxBatch() {
		return "", ceremony.Failf(ErrBatchSize, "a batch holds 1 to %d requests, not %d", s.maxBatch(), len(ids))
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	for i, id := range sorted {
		if !ceremony.ValidID(id) {
			return "", ErrNotFound
		}
		if i > 0 && sorted[i-1] == id {
			return "", ceremony.Failf(ErrBatchSize, "request %s is selected twice", id)
		}
	}
	return strings.Join(sorted, ","), nil
}

// loadBatch reads the selected requests and puts them in batch order. It
// refuses a request that may not be batched, whatever its state.
func (s *Service) loadBatch(ctx context.Context, q querier, ids []string) (*batchSet, error) {
	b := &batchSet{}
	byDigest := map[[32]byte]*row{}
	var digests [][32]byte
	for _, id := range ids {
		r, err := s.load(ctx, q, id)
		if err != nil {
			return nil, err
		}
		if r.Level != vocab.LevelHigh || !r.Batchable {
			return nil, ceremony.Failf(ErrNotBatchable, "request %s (%s, %s) is not batchable: it needs its own tap", r.ID, r.Tool, r.Level)
		}
		d, err := s.digest(r, vocab.Approve)
		if err != nil {
			return nil, err
		}
		byDigest[d] = r
		digests = append(digests, d)
	}
	sorted, err := digest.SortBatch(digests)
	if err != nil {
		return nil, ceremony.Failf(ErrBatchSize, "%v", err)
	}
	if b.challenge, err = digest.BatchChallenge(sorted); err != nil {
		return nil, err
	}
	for _, d := range sorted {
		b.rows = append(b.rows, byDigest[d])
		b.digests = append(b.digests, hex.EncodeToString(d[:]))
	}
	return b, nil
}

// BeginBatch starts one WebAuthn assertion that approves every request in
// ids. It allows the keys of the approvers eligible for all of them and
// counted on none, and asks for user verification if any request requires
// it.
func (s *Service) BeginBatch(ctx context.Context, ids []string) (*BatchOptions, error) {
	key, err := s.batchKey(ids)
	if err != nil {
		return nil, err
	}
	b, err := s.loadBatch(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	var who []string
	var uv vocab.UserVerification
	for i, r := range b.rows {
		if r.State != vocab.StatePending {
			return nil, ceremony.Failf(ErrNotPending, "request %s is %s", r.ID, r.State)
		}
		if !s.now().Before(r.ExpiresAt) {
			s.expire(ctx, r.ID)
			return nil, ceremony.Failf(ErrExpired, "request %s expired at %s", r.ID, digest.FormatTime(r.ExpiresAt))
		}
		eligible := slices.DeleteFunc(slices.Clone(r.Approvers), func(a string) bool { return slices.Contains(r.Approvals, a) })
		if i == 0 {
			who = eligible
		} else {
			who = slices.DeleteFunc(who, func(a string) bool { return !slices.Contains(eligible, a) })
		}
		if uv == "" || r.uv == vocab.UVRequired {
			uv = r.uv
		}
	}
	keys, err := s.keys.Active(ctx, who)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, ceremony.Failf(ErrNoCredentials, "nobody with an enrolled key may approve all %d of these requests (eligible for all, not yet counted: %v)", len(b.rows), who)
	}
	id, options, err := s.keys.BeginAssertion(ctx, "batch", key, vocab.Approve, b.challenge, keys, uv)
	if err != nil {
		return nil, err
	}
	out := &BatchOptions{Ceremony: id, PublicKey: options}
	for _, r := range b.rows {
		out.Requests = append(out.Requests, r.ID)
	}
	return out, nil
}

// FinishBatch verifies the page's assertion for a ceremony BeginBatch
// started for exactly these ids and approves them all, or none. A refusal
// is recorded as approval.rejected on each request of the selection that
// exists, with the failed check as its reason. It returns the requests in
// batch order.
func (s *Service) FinishBatch(ctx context.Context, ids []string, ceremonyID string, response []byte) ([]*Request, error) {
	key, err := s.batchKey(ids)
	if err != nil {
		return nil, err
	}
	var p *protocol.ParsedCredentialAssertionData
	var b *batchSet
	var v *verified
	_, session, err := s.keys.Take(ctx, ceremonyID, "batch", key)
	if err == nil {
		p, err = ceremony.ParseAssertion(response)
	}
	if err == nil {
		b, err = s.loadBatch(ctx, s.db, ids)
	}
	if err == nil {
		v, err = s.verifyAssertion(ctx, assertionCheck{batch: b, decision: vocab.Approve, session: session}, p)
	}
	if err == nil {
		err = s.db.InTx(ctx, func(tx *sql.Tx) error {
			if err := s.keys.Spend(ctx, tx, b.rows[0].ID, v.Verified); err != nil {
				return err
			}
			for i, r := range b.rows {
				if err := s.countDecision(ctx, tx, r.ID, vocab.Approve, v, &batchPlace{digests: b.digests, position: i}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		var ce *ceremony.CheckError
		if errors.As(err, &ce) || errors.Is(err, ErrNotFound) {
			var rerrs []error
			for _, id := range ids {
				rerrs = append(rerrs, s.recordRejected(ctx, id, vocab.Approve, p, err))
			}
			if rerr := errors.Join(rerrs...); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
		if errors.Is(err, ErrExpired) {
			for _, id := range ids {
				s.expire(ctx, id)
			}
		}
		return nil, err
	}
	if err := s.flush(ctx, false); err != nil {
		return nil, err
	}
	s.notify()
	s.opts.Logger.Info("batch approved", "approver", v.Key.Approver, "requests", len(b.rows))
	var out []*Request
	for _, r := range b.rows {
		got, err := s.Get(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		s.announceDecision(got, v.Key.Approver)
		out = append(out, got)
	}
	return out, nil
}

// markBatchable records, inside the request's creating transaction, that
// the policy let it be batched.
func markBatchable(ctx context.Context, tx *sql.Tx, id string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO approval_batchable (request_id) VALUES (?)`, id)
	return err
}
