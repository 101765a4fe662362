// Package approvaltest plays the approvers in tests of approval, its page
// and the whole server: a software security key ([SoftKey]), a client of
// the page's JSON endpoints ([Page]), and a real headless Chromium whose
// tabs each get a virtual CTAP2 security key (through the DevTools WebAuthn
// domain), enroll keys via one-time links and tap Approve or Deny on a
// request page; with the fixtures those need (an audit log, a clock moved
// by hand, a local CA, an attestation maker).
//
// It deliberately knows nothing of package approval's types (so the
// approval package's own tests can use it): it speaks URLs and element ids.
// Every helper fails the test on error; a missing Chromium is a failure,
// never a skip.
package approvaltest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// StepTimeout bounds one Do call and one WaitText poll.
const StepTimeout = 30 * time.Second

// ChromiumPath finds the browser: $COUNTERSIGN_CHROMIUM, else the usual
// system paths. Missing Chromium fails the test, because CI installs it and
// a silently skipped browser test proves nothing.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("COUNTERSIGN_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found at /usr/bin/chromium (or $COUNTERSIGN_CHROMIUM): install it with `apt-get install -y chromium`; the browser tests must not be skipped")
	return ""
}

// NewBrowser returns an allocator context for one headless Chromium with a
// throwaway profile; the browser starts with the first Tab and stops when
// the test ends.
func NewBrowser(t testing.TB) context.Context {
	t.Helper()
	exe := ChromiumPath(t)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(480, 1000),
	)
	t.Cleanup(cancel)
	return alloc
}

// Tab opens a tab with its own virtual CTAP2 authenticator that reports
// user verification when uv is set. parent is the browser from NewBrowser
// (the first tab starts Chromium) or an existing tab (a new tab in the same
// browser).
func Tab(t testing.TB, parent context.Context, uv bool) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		t.Fatalf("start Chromium / WebAuthn.enable: %v", err)
	}
	_, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{
		Options: &cdpwebauthn.VirtualAuthenticatorOptions{
			Protocol:                    cdpwebauthn.AuthenticatorProtocolCtap2,
			Ctap2version:                cdpwebauthn.Ctap2versionCtap21,
			Transport:                   cdpwebauthn.AuthenticatorTransportUsb,
			HasResidentKey:              true,
			HasUserVerification:         true,
			IsUserVerified:              uv,
			AutomaticPresenceSimulation: true,
		},
	})
	if err != nil {
		t.Fatalf("add virtual authenticator: %v", err)
	}
	return ctx
}

// Do runs the steps in the tab, failing the test on error or after
// StepTimeout.
func Do(t testing.TB, tab context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// Text returns the text of the first element matching the CSS selector.
func Text(t testing.TB, tab context.Context, selector string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, StepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		t.Fatalf("text of %s: %v", selector, err)
	}
	return s
}

// WaitText waits until the text of the element with that id starts with
// prefix, and fails the test with what it reads otherwise.
func WaitText(t testing.TB, tab context.Context, id, prefix string) {
	t.Helper()
	expr := fmt.Sprintf(`(document.getElementById(%q)||{textContent:""}).textContent.startsWith(%q)`, id, prefix)
	_, err := chromedp.Run(tab, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(StepTimeout)))
	if err != nil {
		text, _ := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(`(document.getElementById(%q)||{textContent:"(missing)"}).textContent`, id)))
		t.Fatalf("#%s never started with %q; it reads %q (%v)", id, prefix, text, err)
	}
}

// Enroll registers the tab's virtual key through a one-time enrollment
// link, waits for the page to confirm, and checks the link is then spent.
func Enroll(t testing.TB, tab context.Context, link string) {
	t.Helper()
	Do(t, tab, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#register")), chromedp.Click(chromedp.CSS("#register")))
	WaitText(t, tab, "outcome", "Key registered")
	Do(t, tab, chromedp.Navigate(link))
	if body := Text(t, tab, "main"); !strings.Contains(body, "not valid") {
		t.Fatalf("enrollment link still usable after use; page reads %q", body)
	}
}

// Open navigates the tab to a request page and waits until its Approve and
// Deny buttons show.
func Open(t testing.TB, tab context.Context, requestURL string) {
	t.Helper()
	Do(t, tab, chromedp.Navigate(requestURL), chromedp.WaitVisible(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#deny")))
}

// Approve opens the request page and taps Approve; the tab's key signs.
// It returns once the click is sent: wait on #outcome or #state for the
// result.
func Approve(t testing.TB, tab context.Context, requestURL string) {
	t.Helper()
	Open(t, tab, requestURL)
	Do(t, tab, chromedp.Click(chromedp.CSS("#approve")))
}

// Deny opens the request page and taps Deny; the tab's key signs.
func Deny(t testing.TB, tab context.Context, requestURL string) {
	t.Helper()
	Open(t, tab, requestURL)
	Do(t, tab, chromedp.Click(chromedp.CSS("#deny")))
}
