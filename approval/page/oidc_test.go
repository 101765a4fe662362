package page

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/identity/idptest"
	"github.com/countersign/countersign/vocab"
)

// idpPage is the page with sign-in through a real OpenID Provider
// (idptest), served over plain http on localhost, and a browser-like
// client (cookie jar) that follows redirects between the two.
type idpPage struct {
	*fixture
	log    *audit.Log
	idp    *idptest.Provider
	rp     *identity.Provider
	people *identity.People
	base   string
	client *http.Client
	clock  *testClock
}

// testClock is the page's and the relying party's clock, which a test
// moves forward (the provider keeps the real one).
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// newIdPPage starts the provider with alice (finance-approvers) and dave
// (no mapped group), and the page whose identity.roles map
// finance-approvers to treasury.
func newIdPPage(t *testing.T) *idpPage {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://localhost:" + strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
	clock := &testClock{}
	ctx := context.Background()
	dir, db, log, _ := approvaltest.OpenLog(t)
	people, err := identity.OpenPeople(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	opts := approval.Options{RPID: "localhost", RPName: "Countersign", Origins: []string{base}, PublicURL: base,
		Approvers: testApprovers, PollInterval: time.Second, Now: clock.now, People: people}
	svc, err := approval.New(ctx, db, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	f := &fixture{svc: svc, opts: opts, db: db, dir: dir}
	idp := idptest.New(t)
	idp.AddUser("alice", "alice@example.com", "finance-approvers")
	idp.AddUser("dave", "dave@example.com", "marketing")
	idp.AddClient("countersign", "s3cret", []string{base + CallbackPath}, idptest.GrantAuthorizationCode, idptest.GrantRefreshToken)
	rp := identity.New(identity.Config{
		Identity: config.Identity{Issuer: idp.Issuer(), ClientID: "countersign", ClientSecret: "s3cret",
			Scopes: []string{"openid", "email", "profile", "offline_access"}, SubjectClaim: "sub", GroupsClaim: "groups",
			Roles: map[string][]string{"treasury": {"finance-approvers"}}, Recheck: 5 * time.Minute},
		RedirectURL: base + CallbackPath, MaxAuthAge: 12 * time.Hour, Now: clock.now,
	})
	people.Recheck(rp, 5*time.Minute, clock.now)
	srv := &http.Server{Handler: Handler(f.svc, Options{Origins: []string{base}, PublicURL: base,
		Identity: rp, People: people, MaxAuthAge: 12 * time.Hour, SessionTTL: 24 * time.Hour}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	jar, _ := cookiejar.New(nil)
	addr := ln.Addr().String()
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if strings.HasPrefix(a, "localhost:") {
				a = addr
			}
			return (&net.Dialer{}).DialContext(ctx, network, a)
		}}}
	return &idpPage{fixture: f, log: log, idp: idp, rp: rp, people: people, base: base, client: client, clock: clock}
}

// get follows redirects from path (on the page, or an absolute URL) and
// returns where it ended, the status and the body.
func (p *idpPage) get(t *testing.T, path string) (*url.URL, int, string) {
	t.Helper()
	if strings.HasPrefix(path, "/") {
		path = p.base + path
	}
	resp, err := p.client.Get(path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Request.URL, resp.StatusCode, string(b)
}

// signIn follows the sign-in link, posting the provider's form as user
// when it shows one.
func (p *idpPage) signIn(t *testing.T, user string) (int, string) {
	t.Helper()
	at, code, body := p.get(t, "/signin/oidc")
	if strings.Contains(body, `name="authRequestID"`) {
		resp, err := p.client.PostForm(at.Scheme+"://"+at.Host+"/login", url.Values{"username": {user}, "authRequestID": {at.Query().Get("authRequestID")}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
	}
	return code, body
}

func TestSignInThroughTheIdentityProvider(t *testing.T) {
	p := newIdPPage(t)
	// Nothing shows before a sign-in; the sign-in page links to the
	// provider with a plain link (it works before any script runs).
	at, code, body := p.get(t, "/")
	if at.Path != "/signin" || code != 200 || !strings.Contains(body, `href="/signin/oidc"`) || !strings.Contains(body, p.idp.Issuer()) {
		t.Fatalf("unsigned visit: %s %d\n%s", at, code, body)
	}
	code, body = p.signIn(t, "alice")
	if code != 200 || !strings.Contains(body, "Signed in as alice (roles: treasury)") || !strings.Contains(body, `http-equiv="refresh" content="0;url=/"`) {
		t.Fatalf("callback: %d\n%s", code, body)
	}
	at, code, body = p.get(t, "/")
	if at.Path != "/" || code != 200 || !strings.Contains(body, "Waiting for a decision") {
		t.Fatalf("signed in, the page: %s %d", at, code)
	}
	// The session and the record are bound to the provider's person.
	k, ok, err := p.people.Get(context.Background(), identity.ApproverID(p.idp.Issuer(), "alice"))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if k.Issuer != p.idp.Issuer() || k.Subject != "alice" || !slices.Equal(k.Groups, []string{"finance-approvers"}) ||
		!slices.Equal(k.Roles, []string{"treasury"}) || k.AuthTime.IsZero() || k.RefreshToken == "" {
		t.Errorf("remembered %+v", k)
	}

	// Past max_auth_age the session ends; the provider, resuming its
	// own older login, is asked for a fresh one (prompt=login).
	p.clock.advance(13 * time.Hour)
	if at, _, _ := p.get(t, "/"); at.Path != "/signin" {
		t.Fatalf("after max_auth_age the page is still open: %s", at)
	}
	p.client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Query().Get("prompt") == "login" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := p.client.Get(p.base + "/signin/oidc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "prompt=login") || !strings.Contains(loc, "max_age=43200") {
		t.Fatalf("a stale login is not sent for a fresh one: %d %s (via %s)", resp.StatusCode, loc, resp.Request.URL)
	}
}

func TestSignInRefusals(t *testing.T) {
	p := newIdPPage(t)
	// The provider down before anyone signed in (nothing discovered):
	// the page says so.
	p.idp.Stop()
	_, code, body := p.get(t, "/signin/oidc")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be reached") {
		t.Errorf("provider down: %d\n%s", code, body)
	}
	p.idp.Start()
	// Someone the provider knows, but whose groups map to no role.
	code, body = p.signIn(t, "dave")
	if code != http.StatusForbidden || !strings.Contains(body, "none of your groups there gives an approver role") {
		t.Errorf("dave: %d\n%s", code, body)
	}
	if at, _, _ := p.get(t, "/"); at.Path != "/signin" {
		t.Errorf("dave got in: %s", at)
	}
	// A callback this browser did not start (no login cookie).
	_, code, body = p.get(t, CallbackPath+"?state=x&code=y")
	if code != http.StatusBadRequest || !strings.Contains(body, "did not start this sign-in") {
		t.Errorf("foreign callback: %d\n%s", code, body)
	}
	// The provider says no.
	_, code, body = p.get(t, CallbackPath+"?error=access_denied&error_description=nope")
	if code != http.StatusUnauthorized || !strings.Contains(body, "did not sign you in: access_denied nope") {
		t.Errorf("provider error: %d\n%s", code, body)
	}
}

// exportVerifies exports the whole log and verifies it offline.
func (p *idpPage) exportVerifies(t *testing.T) []audit.Entry {
	t.Helper()
	var export bytes.Buffer
	if err := p.log.Export(context.Background(), &export, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(bytes.NewReader(export.Bytes()), p.log.PublicKey(), verify.Options{AllSignatures: true}); err != nil {
		t.Fatalf("offline verify: %v\n%s", err, export.String())
	}
	entries, err := p.log.Since(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// byKind is the last entry of kind.
func byKind(t *testing.T, entries []audit.Entry, kind vocab.Kind) audit.Entry {
	t.Helper()
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Kind == kind {
			return entries[i]
		}
	}
	t.Fatalf("no %s in the log", kind)
	return audit.Entry{}
}

func TestSelfEnrollmentThroughTheIdentityProvider(t *testing.T) {
	p := newIdPPage(t)
	// Without a session there is no link.
	anon := approvaltest.NewPageWithClient(&http.Client{Transport: p.client.Transport}, p.base)
	var pe *approvaltest.Error
	if _, err := anon.EnrollSelf(approvaltest.NewSoftKey(t, "localhost", p.base)); !errors.As(err, &pe) || pe.Status != http.StatusUnauthorized {
		t.Fatalf("self-enrollment without a session: %v", err)
	}

	if code, body := p.signIn(t, "alice"); code != 200 {
		t.Fatalf("sign-in: %d\n%s", code, body)
	}
	if _, _, body := p.get(t, "/"); !strings.Contains(body, `id="enroll-self"`) || !strings.Contains(body, "Signed in as <strong>alice</strong>") {
		t.Fatalf("the page offers no self-enrollment:\n%s", body)
	}
	page := approvaltest.NewPageWithClient(p.client, p.base)
	key := approvaltest.NewSoftKey(t, "localhost", p.base)
	if _, err := page.EnrollSelf(key); err != nil {
		t.Fatal(err)
	}
	alice := identity.ApproverID(p.idp.Issuer(), "alice")
	if _, _, body := p.get(t, "/"); !strings.Contains(body, "<td>alice</td>") {
		t.Errorf("the key list does not name alice's key:\n%s", body)
	}
	// Her key alone does not sign her in: she signs in at the provider.
	if code, body := keySignIn(t, p, key); code != http.StatusForbidden || !strings.Contains(body, "sign in with your company account") {
		t.Errorf("key sign-in of a person of the provider: %d %s", code, body)
	}
	// A further key needs one she has to vouch for it, as always.
	if _, err := page.EnrollSelf(approvaltest.NewSoftKey(t, "localhost", p.base)); err == nil || !strings.Contains(err.Error(), `step "get"`) {
		t.Errorf("a second key without vouching: %v", err)
	}

	entries := p.exportVerifies(t)
	for _, kind := range []vocab.Kind{vocab.KindEnrollmentCreated, vocab.KindApproverEnrolled} {
		e := byKind(t, entries, kind)
		if e.Approver != alice || e.IdPIssuer != p.idp.Issuer() || e.IdPSubject != "alice" || e.IdPEmail != "alice@example.com" {
			t.Errorf("%s: approver %q issuer %q subject %q email %q", kind, e.Approver, e.IdPIssuer, e.IdPSubject, e.IdPEmail)
		}
		if at, err := time.Parse(time.RFC3339, e.IdPAuthTime); err != nil || time.Since(at) > time.Hour {
			t.Errorf("%s: auth time %q", kind, e.IdPAuthTime)
		}
	}
	if e := byKind(t, entries, vocab.KindApproverEnrolled); e.CredentialID == "" || e.PublicKey == "" {
		t.Errorf("approver.enrolled without the key: %+v", e)
	}
}

// A request a policy gave to role:treasury (a role of the provider) is
// for the people who hold it; alice's approval records who she is at the
// provider and her groups, and the export verifies.
func TestPersonOfTheProviderApprovesARoleRequest(t *testing.T) {
	p := newIdPPage(t)
	if code, body := p.signIn(t, "alice"); code != 200 {
		t.Fatalf("sign-in: %d\n%s", code, body)
	}
	page := approvaltest.NewPageWithClient(p.client, p.base)
	key := approvaltest.NewSoftKey(t, "localhost", p.base)
	if _, err := page.EnrollSelf(key); err != nil {
		t.Fatal(err)
	}
	alice := identity.ApproverID(p.idp.Issuer(), "alice")
	ctx := context.Background()
	if _, err := p.svc.Create(ctx, paymentRequest("role:ops")); !errors.Is(err, approval.ErrInvalidRequest) {
		t.Errorf("a role nobody holds: %v", err)
	}
	req, err := p.svc.Create(ctx, paymentRequest("role:treasury", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.Approvers, []string{"bob", alice}) {
		t.Fatalf("eligible %v, want bob and alice", req.Approvers)
	}
	got, err := page.Decide(req.ID, string(vocab.Approve), key)
	if err != nil || got.State != vocab.StateApproved {
		t.Fatalf("alice approves: %+v %v", got, err)
	}
	e := byKind(t, p.exportVerifies(t), vocab.KindApprovalAssertion)
	if e.Approver != alice || e.IdPIssuer != p.idp.Issuer() || e.IdPSubject != "alice" ||
		!slices.Equal(e.IdPGroups, []string{"finance-approvers"}) || e.IdPAuthTime == "" {
		t.Errorf("assertion: approver %q issuer %q subject %q groups %v auth %q", e.Approver, e.IdPIssuer, e.IdPSubject, e.IdPGroups, e.IdPAuthTime)
	}
}

// Leavers: once what the provider said is older than identity.recheck, an
// approval asks it again. Taken out of the group, or out of the
// directory, a person's approval is refused with the reason (recorded),
// their denial still works, and new requests no longer name them; while
// the provider cannot be asked, approvals fail closed and denials go on.
func TestLeaversLoseTheirPowerAtTheNextRecheck(t *testing.T) {
	p := newIdPPage(t)
	if code, body := p.signIn(t, "alice"); code != 200 {
		t.Fatalf("sign-in: %d\n%s", code, body)
	}
	page := approvaltest.NewPageWithClient(p.client, p.base)
	key := approvaltest.NewSoftKey(t, "localhost", p.base)
	if _, err := page.EnrollSelf(key); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := identity.ApproverID(p.idp.Issuer(), "alice")
	request := func() string {
		t.Helper()
		r, err := p.svc.Create(ctx, paymentRequest("role:treasury", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	refused := func(id, check string) {
		t.Helper()
		_, err := page.Decide(id, string(vocab.Approve), key)
		var pe *approvaltest.Error
		if !errors.As(err, &pe) || pe.Check != check {
			t.Fatalf("approval: %v, want refused by %s", err, check)
		}
	}

	// Within recheck the provider is not asked: what it said holds.
	first := request()
	p.idp.SetGroups("alice", "staff")
	if got, err := page.Decide(first, string(vocab.Approve), key); err != nil || got.State != vocab.StateApproved {
		t.Fatalf("within recheck: %+v %v", got, err)
	}

	// The provider down, past recheck: approvals fail closed, a
	// denial goes on.
	p.idp.SetGroups("alice", "finance-approvers")
	p.clock.advance(6 * time.Minute)
	down, denied := request(), request()
	p.idp.Stop()
	refused(down, "identity_provider_unreachable")
	if got, err := page.Decide(denied, string(vocab.Deny), key); err != nil || got.State != vocab.StateDenied {
		t.Fatalf("a denial while the provider is down: %+v %v", got, err)
	}
	p.idp.Start()
	if got, err := page.Decide(down, string(vocab.Approve), key); err != nil || got.State != vocab.StateApproved {
		t.Fatalf("provider back: %+v %v", got, err)
	}

	// Taken out of the group: refused at the next recheck, with why.
	p.idp.SetGroups("alice", "staff")
	p.clock.advance(6 * time.Minute)
	ungrouped := request()
	refused(ungrouped, "not_eligible")
	if r, err := p.svc.Create(ctx, paymentRequest("role:treasury", "bob")); err != nil || slices.Contains(r.Approvers, alice) {
		t.Errorf("a new request still names her: %v %v", r.Approvers, err)
	}
	if got, err := page.Decide(ungrouped, string(vocab.Deny), key); err != nil || got.State != vocab.StateDenied {
		t.Fatalf("her denial: %+v %v", got, err)
	}

	// Back in the group, she signs in again; then out of the
	// directory: the provider refuses her refresh token.
	p.idp.SetGroups("alice", "finance-approvers")
	if code, body := p.signIn(t, "alice"); code != 200 {
		t.Fatalf("sign-in again: %d\n%s", code, body)
	}
	p.idp.RemoveUser("alice")
	p.clock.advance(6 * time.Minute)
	gone := request()
	refused(gone, "not_eligible")

	entries := p.exportVerifies(t)
	var reasons []string
	for _, e := range entries {
		if e.Kind == vocab.KindApprovalRejected {
			reasons = append(reasons, e.Reason)
		}
	}
	if len(reasons) != 3 || !strings.Contains(reasons[0], "identity_provider_unreachable") || !strings.Contains(reasons[1], "not_eligible") {
		t.Errorf("rejections recorded: %q", reasons)
	}
}

// In Chromium: sign in through the provider's own login page, register
// the tab's virtual key on the page, approve a request the policy gave a
// role of the provider; the export records who she is there and verifies.
func TestBrowserSignInThroughTheProviderEnrollAndApprove(t *testing.T) {
	p := newIdPPage(t)
	alloc := approvaltest.NewBrowser(t)
	tab := approvaltest.Tab(t, alloc, true)
	do(t, tab, chromedp.Navigate(p.base+"/"), chromedp.WaitVisible(chromedp.CSS("#signin-idp")), chromedp.Click(chromedp.CSS("#signin-idp")))
	do(t, tab, chromedp.WaitVisible(chromedp.CSS("#username")), chromedp.SendKeys(chromedp.CSS("#username"), "alice"), chromedp.Click(chromedp.CSS("#login")))
	// The callback's page moves on to the list, where the session holds.
	do(t, tab, chromedp.WaitVisible(chromedp.CSS("#enroll-self")))
	if who := approvaltest.Text(t, tab, "#self-enroll"); !strings.Contains(who, "Signed in as alice at "+p.idp.Issuer()) || !strings.Contains(who, "roles: treasury") {
		t.Fatalf("signed in as: %q", who)
	}
	do(t, tab, chromedp.Click(chromedp.CSS("#enroll-self")), chromedp.WaitVisible(chromedp.CSS("#register")), chromedp.Click(chromedp.CSS("#register")))
	waitText(t, tab, "outcome", "Key registered")

	req, err := p.svc.Create(context.Background(), paymentRequest("role:treasury"))
	if err != nil {
		t.Fatal(err)
	}
	approvaltest.Approve(t, tab, p.base+"/requests/"+req.ID)
	waitText(t, tab, "state", string(vocab.StateApproved))

	entries := p.exportVerifies(t)
	alice := identity.ApproverID(p.idp.Issuer(), "alice")
	for _, kind := range []vocab.Kind{vocab.KindApproverEnrolled, vocab.KindApprovalAssertion} {
		if e := byKind(t, entries, kind); e.Approver != alice || e.IdPIssuer != p.idp.Issuer() || e.IdPSubject != "alice" {
			t.Errorf("%s: approver %q issuer %q subject %q", kind, e.Approver, e.IdPIssuer, e.IdPSubject)
		}
	}
	if e := byKind(t, entries, vocab.KindApprovalAssertion); !slices.Equal(e.IdPGroups, []string{"finance-approvers"}) {
		t.Errorf("the approval's groups: %v", e.IdPGroups)
	}
}

// keySignIn runs the key sign-in ceremony with key in a browser of its
// own (no cookies but the CSRF token's); it returns the finish's status
// and body.
func keySignIn(t *testing.T, p *idpPage, key *approvaltest.SoftKey) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: p.client.Transport}
	resp, err := c.Get(p.base + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, rest, _ := strings.Cut(string(page), `name="csrf-token" content="`)
	csrf, _, _ := strings.Cut(rest, `"`)
	post := func(path string, body any) (int, []byte) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, p.base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", p.base)
		req.Header.Set("X-CSRF-Token", csrf)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	code, raw := post("/api/signin/begin", map[string]any{})
	var opts ceremony.SignInOptions
	if code != 200 || json.Unmarshal(raw, &opts) != nil {
		t.Fatalf("sign-in begin: %d %s", code, raw)
	}
	code, raw = post("/api/signin/finish", map[string]any{"ceremony": opts.Ceremony, "credential": json.RawMessage(key.Get(opts.PublicKey.Challenge.String()))})
	return code, string(raw)
}
