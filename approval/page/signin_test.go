package page

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/vocab"
)

// tlsPage serves the page with RequireSignIn over real TLS, with a
// certificate for localhost that the test makes and its client trusts.
type tlsPage struct {
	*fixture
	base   string
	client *http.Client
	csrf   string
}

func newTLSPage(t *testing.T, mods ...func(*Options)) *tlsPage {
	t.Helper()
	ca := approvaltest.NewLocalCA(t, "", "localhost", "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	base := fmt.Sprintf("https://localhost:%d", port)
	f := newFixture(t, func(o *approval.Options) { o.Origins, o.PublicURL = []string{base}, base })
	po := Options{Origins: []string{base}, PublicURL: base, RequireSignIn: true,
		AllowedHosts: []string{fmt.Sprintf("localhost:%d", port)}}
	for _, m := range mods {
		m(&po)
	}
	srv := &http.Server{Handler: Handler(f.svc, po), ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Cert}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	jar, _ := cookiejar.New(nil)
	addr := ln.Addr().String()
	p := &tlsPage{fixture: f, base: base, client: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}}}
	// The sign-in page is open, and sets the CSRF cookie.
	code, body, _ := p.get(t, "/signin")
	m := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("sign-in page: %d %s", code, body)
	}
	p.csrf = m[1]
	return p
}

func (p *tlsPage) get(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := p.client.Get(p.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (p *tlsPage) post(t *testing.T, path string, body any) (int, []byte, *http.Response) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, p.base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", p.base)
	req.Header.Set("X-CSRF-Token", p.csrf)
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp
}

// signIn runs the sign-in ceremony with key; it returns the status and the
// session cookie set, if any.
func (p *tlsPage) signIn(t *testing.T, key *approvaltest.SoftKey) (int, *http.Cookie) {
	t.Helper()
	code, raw, _ := p.post(t, "/api/signin/begin", map[string]any{})
	var opts ceremony.SignInOptions
	if code != 200 || json.Unmarshal(raw, &opts) != nil {
		t.Fatalf("sign-in begin: %d %s", code, raw)
	}
	if len(opts.PublicKey.AllowedCredentials) != 0 {
		t.Fatalf("sign-in options name credentials: %s", raw)
	}
	code, raw, resp := p.post(t, "/api/signin/finish", map[string]any{"ceremony": opts.Ceremony, "credential": json.RawMessage(key.Get(opts.PublicKey.Challenge.String()))})
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return code, c
		}
	}
	return code, nil
}

func TestRemotePageNeedsSignInOverTLS(t *testing.T) {
	p := newTLSPage(t)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(t, "localhost", p.base)
	p.enroll(t, "alice", alice)
	req, err := p.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	credID := enc(alice.ID())

	// Before signing in: nothing about requests, history or keys.
	for _, path := range []string{"/", "/requests/" + req.ID} {
		code, body, hdr := p.get(t, path)
		if code != http.StatusSeeOther || hdr.Get("Location") != "/signin" || strings.Contains(body, req.ID) || strings.Contains(body, credID) {
			t.Fatalf("GET %s before sign-in: %d %q", path, code, hdr.Get("Location"))
		}
	}
	for _, path := range []string{"/api/requests", "/api/requests/" + req.ID, "/api/events"} {
		if code, body, _ := p.get(t, path); code != http.StatusUnauthorized || strings.Contains(body, req.ID) {
			t.Fatalf("GET %s before sign-in: %d %s", path, code, body)
		}
	}
	// begin would list the allowed credential ids.
	if code, raw, _ := p.post(t, "/api/requests/"+req.ID+"/begin", map[string]any{"decision": "approve"}); code != http.StatusUnauthorized || strings.Contains(string(raw), credID) {
		t.Fatalf("begin before sign-in: %d %s", code, raw)
	}

	// A key that is not enrolled does not sign in.
	if code, c := p.signIn(t, approvaltest.NewSoftKey(t, "localhost", p.base)); code == http.StatusOK || c != nil {
		t.Fatalf("unenrolled key signed in: %d %v", code, c)
	}
	// A key that signs for alice's credential id without her private key does not either.
	forger := approvaltest.NewSoftKey(t, "localhost", p.base)
	forger.Claim(alice.ID(), 1000)
	if code, c := p.signIn(t, forger); code == http.StatusOK || c != nil {
		t.Fatalf("forged assertion signed in: %d %v", code, c)
	}

	code, c := p.signIn(t, alice)
	if code != http.StatusOK || c == nil {
		t.Fatalf("alice's sign-in: %d", code)
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.MaxAge <= 0 || c.MaxAge > int(DefaultSessionTTL.Seconds()) {
		t.Fatalf("session cookie %+v: want Secure, HttpOnly, SameSite=Strict, short-lived", c)
	}
	if code, body, _ := p.get(t, "/"); code != 200 || !strings.Contains(body, req.ID) {
		t.Fatalf("index after sign-in: %d", code)
	}
	if code, body, _ := p.get(t, "/api/requests/"+req.ID); code != 200 || !strings.Contains(body, req.ID) {
		t.Fatalf("request after sign-in: %d %s", code, body)
	}
	// And she approves, over TLS, with the same key.
	code, raw, _ := p.post(t, "/api/requests/"+req.ID+"/begin", map[string]any{"decision": "approve"})
	var opts approval.DecisionOptions
	if code != 200 || json.Unmarshal(raw, &opts) != nil {
		t.Fatalf("begin: %d %s", code, raw)
	}
	code, raw, _ = p.post(t, "/api/requests/"+req.ID+"/finish", map[string]any{"ceremony": opts.Ceremony, "credential": json.RawMessage(alice.Get(opts.PublicKey.Challenge.String()))})
	if code != 200 || !strings.Contains(string(raw), `"state":"approved"`) {
		t.Fatalf("finish: %d %s", code, raw)
	}
	// A made-up session cookie is not a session.
	p.client.Jar.SetCookies(c2u(p.base), []*http.Cookie{{Name: sessionCookie, Value: strings.Repeat("A", 43)}})
	if code, _, _ := p.get(t, "/api/requests"); code != http.StatusUnauthorized {
		t.Fatalf("made-up session: %d", code)
	}
}

func c2u(base string) *url.URL { u, _ := url.Parse(base); return u }

// The sign-in page's own script, in Chromium with a virtual key: a visitor
// is sent to /signin, taps, and lands on the list.
func TestBrowserSignIn(t *testing.T) {
	alloc := approvaltest.NewBrowser(t)
	f, base, _ := newServedFixture(t, func(_ *approval.Options, o *Options) { o.RequireSignIn = true })
	b := &browserFixture{fixture: f, base: base, alloc: alloc}
	tab := b.tab(t, alloc, true)
	b.enrollInBrowser(t, tab, "alice") // enrollment links need no session
	req, err := f.svc.Create(context.Background(), paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#signin-key")))
	if body := approvaltest.Text(t, tab, "main"); strings.Contains(body, "Vendor X") {
		t.Fatalf("the sign-in page shows a request: %s", body)
	}
	// The page navigates to the list once the session is set.
	do(t, tab, chromedp.Click(chromedp.CSS("#signin-key")), chromedp.WaitVisible(chromedp.CSS("#pending")))
	if list := approvaltest.Text(t, tab, "#pending"); !strings.Contains(list, "Vendor X") {
		t.Fatalf("the list after signing in: %s", list)
	}
	approvaltest.Approve(t, tab, base+"/requests/"+req.ID)
	waitText(t, tab, "state", string(vocab.StateApproved))
}
