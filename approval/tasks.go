package approval

import (
	"context"
	"fmt"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Own returns request id if agent raised it in wait mode wait. A request of
// another agent, or raised in another mode, is ErrNotFound: whoever asks
// cannot tell it from one that does not exist. A pending request past its
// expiry is expired first, so the answer never shows it approvable.
func (s *Service) Own(ctx context.Context, id, agent, wait string) (*Request, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	if r.Agent != agent || r.Wait != wait {
		return nil, ErrNotFound
	}
	if r.State == vocab.StatePending && !s.now().Before(r.ExpiresAt) {
		if err := s.expireErr(context.WithoutCancel(ctx), id); err != nil {
			return nil, expiryUnrecorded(&r.Request, err)
		}
		return s.Own(ctx, id, agent, wait)
	}
	return &r.Request, nil
}

// ListOwn returns, newest first, at most limit requests agent raised in
// wait mode wait, starting after the request named by after ("" for the
// newest).
func (s *Service) ListOwn(ctx context.Context, agent, wait, after string, limit int) ([]*Request, error) {
	q := `SELECT id FROM approval_requests WHERE agent = ? AND wait_mode = ?`
	args := []any{agent, wait}
	if after != "" {
		q += ` AND (created_at, id) < (SELECT created_at, id FROM approval_requests WHERE id = ? AND agent = ?)`
		args = append(args, after, agent)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("approval: list: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("approval: list: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("approval: list: %w", err)
	}
	out := make([]*Request, 0, len(ids))
	for _, id := range ids {
		r, err := s.Own(ctx, id, agent, wait)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Await waits until done says request id has reached what its caller waits
// for, and returns it then; when ctx ends first it returns ctx's error and
// leaves the request as it is. It expires a pending request whose time is
// up, as any waiter does.
func (s *Service) Await(ctx context.Context, id string, done func(*Request) bool) (*Request, error) {
	for {
		ch := s.watch.Of(id)
		r, err := s.load(context.WithoutCancel(ctx), s.db, id)
		if err != nil {
			return nil, err
		}
		if r.State == vocab.StatePending && !s.now().Before(r.ExpiresAt) {
			if err := s.expireErr(context.WithoutCancel(ctx), id); err != nil {
				return nil, expiryUnrecorded(&r.Request, err)
			}
			continue
		}
		if done(&r.Request) {
			s.watch.Forget(id)
			return &r.Request, nil
		}
		t := time.NewTimer(rereadEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// expiryUnrecorded is what a reader of r hears when r's time is up and
// its expiry cannot be written (err): it cannot be approved any more (a
// decision checks expires_at), and the expiry loop records it later.
func expiryUnrecorded(r *Request, err error) error {
	return fmt.Errorf("%w: request %s expired at %s, and its expiry could not be recorded yet: %v",
		ErrRecord, r.ID, r.ExpiresAt.UTC().Format(time.RFC3339), err)
}

// Settled reports whether nothing more will happen to r: it was denied,
// expired or cancelled, or its one run ended.
func Settled(r *Request) bool {
	return r.State != vocab.StatePending && r.State != vocab.StateApproved
}
