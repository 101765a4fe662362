package approval

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// lostReply is a log whose next append lands but reports an error, as a
// commit does whose reply the database never sent (it stopped).
type lostReply struct {
	*approvaltest.Recorder
	lose atomic.Bool
}

func (l *lostReply) Append(ctx context.Context, e audit.Entry) (audit.Entry, error) {
	got, err := l.Recorder.Append(ctx, e)
	if err == nil && l.lose.CompareAndSwap(true, false) {
		return audit.Entry{}, errors.New("the connection ended before the commit's reply")
	}
	return got, err
}

// A request's approval.requested lands in the log, but its append
// reports an error: Create ends the request, and the flush that records
// the cancellation finds the entry already logged rather than appending
// it a second time.
func TestAnEntryWhoseAppendLandedDespiteAnErrorIsNotAppendedTwice(t *testing.T) {
	ctx := context.Background()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	opts := Options{RPID: "localhost", Origins: []string{testOrigin}, PublicURL: testOrigin, Approvers: testApprovers, PollInterval: time.Second}
	if db.Dialect() == store.PostgreSQL {
		owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Owners = owners
	}
	rec := &lostReply{Recorder: &approvaltest.Recorder{}}
	svc, err := New(ctx, db, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })

	rec.lose.Store(true)
	r, err := svc.Create(ctx, paymentRequest("alice"))
	if err == nil || r == nil || r.ID == "" {
		t.Fatalf("Create whose entry's append failed: %+v, %v; want the request's ID and the error", r, err)
	}
	got, err := svc.Get(ctx, r.ID)
	if err != nil || got.State != vocab.StateCancelled {
		t.Fatalf("the request after its entry's append failed: %+v, %v; want it cancelled", got, err)
	}
	if kinds, want := rec.Kinds(r.ID), []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalCancelled}; !slices.Equal(kinds, want) {
		t.Fatalf("the log holds %v for the request, want %v", kinds, want)
	}
}
