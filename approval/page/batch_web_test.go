package page

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// The page's batch endpoints, driven as its script drives them: one tap
// approves the selection, and the refusals come back with their check.
func TestPageClientApprovesABatch(t *testing.T) {
	f, base, addr := newServedFixture(t, func(o *approval.Options, _ *Options) { o.MaxBatch = 3 })
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
	ids := []string{f.create(t, batchRequest(1, "alice")), f.create(t, batchRequest(1, "alice")), f.create(t, batchRequest(1, "alice"))}
	plain := f.create(t, paymentRequest("alice"))

	refused := func(err error, check string) {
		t.Helper()
		var pe *approvaltest.Error
		if !errors.As(err, &pe) || pe.Check != check {
			t.Fatalf("got %v, want a refusal by %s", err, check)
		}
	}
	_, err = page.ApproveBatch(append(ids[:2:2], plain), alice)
	refused(err, "not_batchable")
	_, err = page.ApproveBatch(append(ids[:3:3], plain), alice)
	refused(err, "batch_size")
	_, err = page.ApproveBatch([]string{ids[0], "not-an-id"}, alice)
	refused(err, "not_found")

	// Signed for two of them, sent for all three.
	_, challenge, err := page.BeginBatch(ids[:2])
	if err != nil {
		t.Fatal(err)
	}
	moved := alice.Get(challenge)
	ceremony, _, err := page.BeginBatch(ids)
	if err != nil {
		t.Fatal(err)
	}
	_, err = page.FinishBatch(ids, ceremony, moved)
	refused(err, "challenge")
	f.requireUntouched(t, ids...)

	got, err := page.ApproveBatch(ids, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d requests back, want 3", len(got))
	}
	for _, r := range got {
		if r.State != vocab.StateApproved || r.DecidedBy != "alice" {
			t.Fatalf("after the batch: %+v", r)
		}
	}
	if r, _ := page.Get(plain); r.State != vocab.StatePending {
		t.Fatalf("the request left out is %s", r.State)
	}
}

// In Chromium with a virtual key: tick three requests on the list, read
// each in full on the confirmation page, tap once; all three are approved.
func TestBrowserApprovesABatchWithOneTap(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	b.enrollInBrowser(t, tab, "alice")
	var ids, codes []string
	for i := range 3 {
		nr := batchRequest(1, "alice", "bob")
		nr.Args = digest.MustParseArgs(fmt.Sprintf(`{"to":"Vendor %d","amount":%d,"currency":"USD","from":"operating"}`, i, 20000+i))
		nr.AuthorizationDetails = []byte(fmt.Sprintf(`[{"type":"payment_initiation","actions":["transfer"],"instructedAmount":{"currency":"USD","amount":"%d.00"},"creditorName":"Vendor %d","debtorAccount":{"id":"operating"}}]`, 20000+i, i))
		r, err := b.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		ids, codes = append(ids, r.ID), append(codes, r.Code)
	}
	alone, err := b.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}

	do(t, tab, chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#pending")))
	boxes, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#pending input[name=id]")].map(b => b.value)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(boxes) != 3 || strings.Contains(strings.Join(boxes, ","), alone.ID) {
		t.Fatalf("checkboxes on %v, want the 3 batchable requests %v only", boxes, ids)
	}
	for _, id := range ids {
		do(t, tab, chromedp.Click(chromedp.CSS(`#pending input[value="`+id+`"]`)))
	}
	waitText(t, tab, "review-batch", "Review 3 selected")
	do(t, tab, chromedp.Click(chromedp.CSS("#review-batch")), chromedp.WaitVisible(chromedp.CSS("#approve-batch")))

	// Each request in full, as its own page shows it, before the tap.
	items := approvaltest.Text(t, tab, "#batch")
	for i, id := range ids {
		r, _ := b.svc.Get(ctx, id)
		for _, line := range strings.Split(r.Display, "\n") {
			_, value, _ := strings.Cut(line, ": ")
			if !strings.Contains(items, value) {
				t.Errorf("confirmation page lacks %q of request %d:\n%s", value, i, items)
			}
		}
		if !strings.Contains(items, codes[i]) || !strings.Contains(items, fmt.Sprintf("Vendor %d", i)) {
			t.Errorf("confirmation page lacks request %d's code %s or payee", i, codes[i])
		}
	}
	if n, _ := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll(".batch-item .display").length`)); n != 3 {
		t.Fatalf("%d displays on the confirmation page, want 3", n)
	}
	do(t, tab, chromedp.Click(chromedp.CSS("#approve-batch")))
	waitText(t, tab, "outcome", "Approved all 3 with one tap.")
	for _, id := range ids {
		r, err := b.svc.Get(ctx, id)
		if err != nil || r.State != vocab.StateApproved || r.DecidedBy != "alice" {
			t.Fatalf("request %s after the tap: %+v (%v)", id, r, err)
		}
	}
	if r, _ := b.svc.Get(ctx, alone.ID); r.State != vocab.StatePending {
		t.Fatalf("the request not selected is %s", r.State)
	}
}
