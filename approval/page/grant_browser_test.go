package page

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/vocab"
)

// In the browser: the request page shows the grant the server proposes;
// the approver picks 5 minutes and 2 calls and taps "Approve and grant";
// the main page lists the grant, and one click on Revoke ends it.
func TestBrowserApproveWithGrantThenRevoke(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	b.enrollInBrowser(t, tab, "alice")

	nr := paymentRequest("alice")
	cond := `agent == "agent-1" && tool == "transfer" && args.amount <= 500000 && args.to == "Vendor X"`
	nr.Grant = &grant.Offer{Condition: cond, MaxDuration: 15 * time.Minute, MaxCalls: 10}
	req, err := b.svc.Create(ctx, nr)
	if err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve-grant")))
	if shown := strings.TrimSpace(textOf(t, tab, "#grant-condition")); shown != cond {
		t.Fatalf("the page shows the condition %q, want %q", shown, cond)
	}
	do(t, tab,
		chromedp.SetValue(chromedp.CSS("#grant-minutes"), "5"),
		chromedp.SetValue(chromedp.CSS("#grant-calls"), "2"),
		chromedp.Click(chromedp.CSS("#approve-grant")))
	waitText(t, tab, "state", "approved")

	e, _ := b.rec.Last(vocab.KindApprovalAssertion)
	if e.GrantID == "" || e.GrantMaxCalls != 2 || e.GrantCondition != cond {
		t.Fatalf("the approval does not carry the grant chosen: %+v", e)
	}
	expires, err := time.Parse(time.RFC3339, e.GrantExpiresAt)
	if err != nil || expires.After(time.Now().Add(5*time.Minute)) || expires.Before(time.Now().Add(4*time.Minute)) {
		t.Fatalf("grant_expires_at %q is not 5 minutes on (%v)", e.GrantExpiresAt, err)
	}
	active, err := b.svc.ActiveGrants(ctx, "agent-1", "transfer")
	if err != nil || len(active) != 1 || active[0].ID != e.GrantID || active[0].Approver != "alice" {
		t.Fatalf("active grants %+v %v", active, err)
	}

	do(t, tab, chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#grants button.revoke")))
	if row := textOf(t, tab, "#grants tbody"); !strings.Contains(row, "0 of 2") || !strings.Contains(row, "Vendor X") {
		t.Fatalf("the grants list reads %q", row)
	}
	do(t, tab, chromedp.Click(chromedp.CSS("#grants button.revoke")))
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](`document.querySelector("#grants .status").textContent.startsWith("revoked by")`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("the list never shows the grant revoked: %q", textOf(t, tab, "#grants tbody"))
	}
	if active, _ := b.svc.ActiveGrants(ctx, "agent-1", "transfer"); len(active) != 0 {
		t.Fatalf("a revoked grant is still active: %+v", active)
	}
	if _, err := b.svc.UseGrant(ctx, e.GrantID); err == nil {
		t.Fatal("a revoked grant gave a use")
	}
	r, _ := b.rec.Last(vocab.KindGrantRevoked)
	if r.GrantID != e.GrantID || r.Approver != approval.LoopbackRevoker || r.GrantSeq != e.Seq {
		t.Fatalf("grant.revoked %+v (grant_seq want %d)", r, e.Seq)
	}
}

func textOf(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
