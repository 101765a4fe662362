package approval

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/approval/votes"
	"github.com/countersign/countersign/vocab"
)

// Evidence is what an approved request proves, and all an approval token
// (package token) states: the action digest every approver's key signed,
// and who approved, when, with which assertion.
type Evidence struct {
	Request    *Request
	ArgsSHA256 [32]byte
	// Digest is the action digest of (request, approve).
	Digest [32]byte
	// Votes are the approvals counted towards the quorum, in order.
	Votes []votes.Vote
}

// Evidence returns the evidence of a request whose approval is complete and
// in the audit log: approved, or executed or failed after that. Any other
// request gets ErrNotApproved.
func (s *Service) Evidence(ctx context.Context, id string) (*Evidence, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	switch r.State {
	case vocab.StateApproved, vocab.StateExecuted, vocab.StateFailed:
	default:
		return nil, fmt.Errorf("%w: request %s is %s", ErrNotApproved, id, r.State)
	}
	ev := &Evidence{Request: &r.Request}
	if ev.ArgsSHA256, err = hexDecode32(r.argsSHA256); err != nil {
		return nil, err
	}
	if ev.Digest, err = s.digest(r, vocab.Approve); err != nil {
		return nil, err
	}
	if ev.Votes, err = votes.Approvals(ctx, s.db, id); err != nil {
		return nil, err
	}
	if len(ev.Votes) < r.Quorum {
		return nil, fmt.Errorf("approval: request %s is %s with %d of %d approvals stored", id, r.State, len(ev.Votes), r.Quorum)
	}
	return ev, nil
}
