package page

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/vocab"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the request page screenshot to docs/approver-page.png")

// browserFixture is the service on a real listener, opened as
// http://localhost:PORT with RP ID localhost.
type browserFixture struct {
	*fixture
	base  string
	alloc context.Context
}

func newBrowserFixture(t *testing.T) *browserFixture {
	t.Helper()
	alloc := approvaltest.NewBrowser(t)
	f, base, _ := newServedFixture(t, nil)
	return &browserFixture{fixture: f, base: base, alloc: alloc}
}

// tab opens a browser tab with its own virtual CTAP2 authenticator.
func (b *browserFixture) tab(t *testing.T, parent context.Context, uv bool) context.Context {
	t.Helper()
	return approvaltest.Tab(t, parent, uv)
}

var (
	do       = approvaltest.Do
	waitText = approvaltest.WaitText
)

// enrollInBrowser registers the tab's virtual key for approver via a
// one-time link (which approvaltest.Enroll checks is then spent).
func (b *browserFixture) enrollInBrowser(t *testing.T, tab context.Context, approver string) {
	t.Helper()
	link, err := b.svc.CreateEnrollment(context.Background(), approver)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link, b.base+"/enroll/") {
		t.Fatalf("link %q", link)
	}
	approvaltest.Enroll(t, tab, link)
}

func TestBrowserApproveDenyExpireQuorum(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	aliceTab := b.tab(t, b.alloc, true)
	bobTab := b.tab(t, aliceTab, true) // a second tab in the same browser, with its own key

	b.enrollInBrowser(t, aliceTab, "alice")
	b.enrollInBrowser(t, bobTab, "bob")
	creds, err := b.svc.Credentials(ctx)
	if err != nil || len(creds) != 2 || creds[0].ApproverID != "alice" || creds[1].ApproverID != "bob" {
		t.Fatalf("credentials %+v %v", creds, err)
	}
	if n := slices.Index(b.rec.Kinds(""), vocab.KindApproverEnrolled); n < 0 {
		t.Fatalf("no approver.enrolled entry: %v", b.rec.Kinds(""))
	}

	t.Run("approve", func(t *testing.T) {
		req, err := b.svc.Create(ctx, paymentRequest("alice", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		do(t, aliceTab, chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#pending a")))
		list, _ := chromedp.Run(aliceTab, chromedp.Text(chromedp.CSS("#pending")))
		if !strings.Contains(list, req.BindingMessage) {
			t.Fatalf("pending list %q lacks %q", list, req.BindingMessage)
		}
		do(t, aliceTab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")))
		page, _ := chromedp.Run(aliceTab, chromedp.Text(chromedp.CSS("#request")))
		for _, want := range []string{"USD 500,000.00", "Vendor X", "NEW COUNTERPARTY", "operating", req.Code, "agent-1"} {
			if !strings.Contains(page, want) {
				t.Errorf("request page lacks %q:\n%s", want, page)
			}
		}
		b.screenshot(t, aliceTab)

		waited := make(chan *approval.Request, 1)
		go func() { r, _ := b.svc.Wait(ctx, req.ID); waited <- r }()
		do(t, aliceTab, chromedp.Click(chromedp.CSS("#approve")))
		got := <-waited
		if got.State != vocab.StateApproved || got.DecidedBy != "alice" {
			t.Fatalf("wait: %+v", got)
		}
		waitText(t, aliceTab, "state", "approved")
		e, _ := b.rec.Last(vocab.KindApprovalAssertion)
		if e.Origin != b.base || e.RequestID != req.ID {
			t.Fatalf("assertion entry origin %q request %q", e.Origin, e.RequestID)
		}
		if err := b.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("deny", func(t *testing.T) {
		req, err := b.svc.Create(ctx, paymentRequest("alice", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		do(t, bobTab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#deny")), chromedp.Click(chromedp.CSS("#deny")))
		got, err := b.svc.Wait(ctx, req.ID)
		if err != nil || got.State != vocab.StateDenied || got.DecidedBy != "bob" {
			t.Fatalf("wait: %+v %v", got, err)
		}
		waitText(t, bobTab, "state", "denied")
	})

	t.Run("expire", func(t *testing.T) {
		nr := paymentRequest("alice")
		nr.Timeout = 2 * time.Second
		req, err := b.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		do(t, aliceTab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")))
		// The page learns of the expiry through the event stream.
		waitText(t, aliceTab, "state", "expired")
		if r, _ := b.svc.Get(ctx, req.ID); r.State != vocab.StateExpired {
			t.Fatalf("state %s", r.State)
		}
	})

	t.Run("critical quorum", func(t *testing.T) {
		nr := paymentRequest("alice", "bob")
		nr.Level = "critical"
		req, err := b.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		do(t, aliceTab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")), chromedp.Click(chromedp.CSS("#approve")))
		waitText(t, aliceTab, "outcome", "Your approval is counted: 1 of 2")
		if r, _ := b.svc.Get(ctx, req.ID); r.State != vocab.StatePending {
			t.Fatalf("one of two approved it: %s", r.State)
		}
		do(t, bobTab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")), chromedp.Click(chromedp.CSS("#approve")))
		got, err := b.svc.Wait(ctx, req.ID)
		if err != nil || got.State != vocab.StateApproved || got.DecidedBy != "alice,bob" {
			t.Fatalf("wait: %+v %v", got, err)
		}
		// Alice's tab updates live.
		waitText(t, aliceTab, "state", "approved")
		for _, e := range b.rec.Entries() {
			if e.RequestID == req.ID && e.Kind == vocab.KindApprovalAssertion && !e.UserVerified {
				t.Fatalf("critical assertion without UV: %+v", e)
			}
		}
	})

	t.Run("second key needs an existing key", func(t *testing.T) {
		// Alice's second key: a new tab with a new authenticator cannot
		// vouch for itself, so the link's page fails on the "get" step.
		other := b.tab(t, aliceTab, true)
		link, err := b.svc.CreateEnrollment(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		do(t, other, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#register")), chromedp.Click(chromedp.CSS("#register")))
		waitText(t, other, "outcome", "Not registered")
		creds, _ := b.svc.Credentials(ctx)
		if len(creds) != 2 {
			t.Fatalf("a key was added without an existing key's assertion: %+v", creds)
		}
	})
}

// screenshot keeps the request page as a PNG: docs/approver-page.png with
// -update-screenshot, $COUNTERSIGN_SCREENSHOT if set, else a temp file.
func (b *browserFixture) screenshot(t *testing.T, tab context.Context) {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	path := filepath.Join(t.TempDir(), "approver-page.png")
	if p := os.Getenv("COUNTERSIGN_SCREENSHOT"); p != "" {
		path = p
	}
	if *updateScreenshot {
		path = filepath.Join("..", "..", "docs", "approver-page.png")
		os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
