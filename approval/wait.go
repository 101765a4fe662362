package approval

import (
	"context"
	"errors"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Wait blocks until the request is approved, denied, expired or cancelled.
// If ctx ends first the request is cancelled (and recorded) unless it was
// already decided.
func (s *Service) Wait(ctx context.Context, id string) (*Request, error) {
	return s.await(ctx, id, true)
}

// Watch is Wait for a watcher that is not the request's caller (the
// server's own poll-mode execution): when ctx ends the request is left as
// it is and ctx's error returned, so that it outlives a shutdown.
func (s *Service) Watch(ctx context.Context, id string) (*Request, error) {
	return s.await(ctx, id, false)
}

func (s *Service) await(ctx context.Context, id string, cancelOnDone bool) (*Request, error) {
	r, err := s.Await(ctx, id, func(r *Request) bool { return r.State != vocab.StatePending })
	if err == nil || ctx.Err() == nil || !cancelOnDone {
		return r, err
	}
	err = s.Cancel(context.WithoutCancel(ctx), id, "caller went away: "+context.Cause(ctx).Error())
	if err != nil && !errors.Is(err, ErrNotPending) {
		return nil, err
	}
	got, gerr := s.Get(context.WithoutCancel(ctx), id)
	if gerr != nil {
		return nil, gerr
	}
	if got.State == vocab.StatePending {
		// Approved but not yet logged: report what ctx says.
		return got, ctx.Err()
	}
	return got, nil
}

// rereadEvery bounds how long a waiter goes without reading its request.
// This process wakes it at every change it makes, and its expiry loop
// expires requests on time (also by a test clock); the re-read only
// catches a decision made by another process.
var rereadEvery = 5 * time.Second
