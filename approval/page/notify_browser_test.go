package page

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval/approvaltest"
)

// The pending list, open in a background tab with notifications allowed,
// shows a system notification for a request that appears on it, carrying
// the server's binding message and leading to the request's page.
func TestBrowserNotifiesOfANewRequestInABackgroundTab(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	// Already on the list when the page opens: not news.
	if _, err := b.svc.Create(ctx, paymentRequest("bob")); err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(b.base+"/"), chromedp.WaitReady(chromedp.CSS("#pending")))
	perm, err := chromedp.Run(tab, chromedp.Evaluate[string](`Notification.permission`))
	if err != nil {
		t.Fatal(err)
	}
	if perm != "default" {
		t.Fatalf("Notification.permission is %q in a fresh profile, want default", perm)
	}
	// The permission is asked for on a click; the browser's prompt is
	// answered by the test through DevTools.
	do(t, tab, chromedp.WaitVisible(chromedp.CSS(".notify-toggle")))
	if _, err := chromedp.CallBrowser(tab, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "notifications"}, Setting: browser.PermissionSettingGranted, Origin: b.base,
	}); err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Click(chromedp.CSS(".notify-toggle")), chromedp.WaitNotVisible(chromedp.CSS(".notify-toggle")))

	// Headless tabs are never hidden; say this one is, and keep the
	// notifications the page shows where the test can read them.
	_, err = chromedp.Run(tab, chromedp.Evaluate[bool](`(() => {
		Object.defineProperty(document, "hidden", { get: () => true });
		window.shown = [];
		const N = window.Notification;
		window.Notification = class extends N {
			constructor(title, o) { super(title, o); window.shown.push([title, o.body, o.tag].join("|")); }
		};
		return true;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	req, err := b.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(tab, chromedp.Poll[string](`window.shown.length > 0 && window.shown.join("\n")`,
		chromedp.WithPollingTimeout(approvaltest.StepTimeout)))
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if want := "Approval needed|" + req.BindingMessage + "|" + req.ID; got != want {
		t.Errorf("notification %q, want %q", got, want)
	}
	if strings.Contains(got, "500000") {
		t.Error("the notification quotes the arguments")
	}
}
