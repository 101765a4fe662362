package approval

import (
	"context"
	"time"
)

// What the approver page (its own package, approval/page) reads of the
// service beyond the ceremonies: lists, links, limits and wake-ups. Each
// is a read; everything that changes state is a method with its own
// checks (decide.go, enroll.go, grant.go, freeze.go, batch.go, keys.go).

// Now is the service's clock (Options.Now), so that the page's rate
// limits refill by the same time as ceremonies expire.
func (s *Service) Now() time.Time { return s.now() }

// Pending returns up to limit pending requests, the soonest to expire
// first.
func (s *Service) Pending(ctx context.Context, limit int) ([]*Request, error) {
	return s.list(ctx, true, limit)
}

// History returns up to limit settled requests, newest first.
func (s *Service) History(ctx context.Context, limit int) ([]*Request, error) {
	return s.list(ctx, false, limit)
}

// Changes returns a channel closed at the next change of any request,
// credential, grant or freeze: the page's event stream re-reads then.
func (s *Service) Changes() <-chan struct{} { return s.watch.Any() }

// Done is closed when the service closes.
func (s *Service) Done() <-chan struct{} { return s.stop }

// MaxBatch is how many requests one tap may approve (Options.MaxBatch or
// DefaultMaxBatch).
func (s *Service) MaxBatch() int { return s.maxBatch() }

// CheckBatch reports whether ids is a selection a batch may hold: 1 to
// MaxBatch distinct ids of the shape the server issues (ErrNotFound when
// one is not).
func (s *Service) CheckBatch(ids []string) error {
	_, err := s.batchKey(ids)
	return err
}

// RequestURL is the public address of a request's page.
func (s *Service) RequestURL(id string) string { return s.requestURL(id) }

// EnrollURL is the public address of an enrollment link's page.
func (s *Service) EnrollURL(token string) string { return s.enrollURL(token) }

// EnrollmentApprover is the display name of the approver an unused,
// unexpired enrollment token is for; ceremony.ErrEnrollment when there is none.
func (s *Service) EnrollmentApprover(ctx context.Context, token string) (string, error) {
	approver, err := s.keys.LinkApprover(ctx, token)
	if err != nil {
		return "", err
	}
	return s.approverName(approver), nil
}
