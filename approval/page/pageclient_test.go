package page

import (
	"context"
	"errors"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/vocab"
)

// approvaltest.Page, which tests of the real binary use, speaks to the
// real endpoints as the page's script does.
func TestPageClientEnrollsAndDecides(t *testing.T) {
	f, base, addr := newServedFixture(t, nil)
	ctx := context.Background()
	page := approvaltest.NewPage(addr, base)
	alice := approvaltest.NewSoftKey(t, "localhost", base)
	link, err := f.svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := page.Enroll(link, alice); err != nil {
		t.Fatal(err)
	}
	req, err := f.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := page.Pending(); err != nil || len(ids) != 1 || ids[0] != req.ID {
		t.Fatalf("pending %v (%v)", ids, err)
	}
	got, err := page.Decide(req.ID, string(vocab.Approve), alice)
	if err != nil || got.State != vocab.StateApproved {
		t.Fatalf("decide: %+v (%v)", got, err)
	}
	_, err = page.Decide(req.ID, string(vocab.Deny), alice)
	var pe *approvaltest.Error
	if !errors.As(err, &pe) || pe.Check != "not_pending" {
		t.Fatalf("deciding a decided request: %v", err)
	}
	if r, err := page.Get(req.ID); err != nil || r.State != vocab.StateApproved || r.DecidedBy != "alice" {
		t.Fatalf("get: %+v (%v)", r, err)
	}
}
