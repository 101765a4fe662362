package identity

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity/idptest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// TestMain stops the PostgreSQL server the tests started (package pgtest).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

const redirect = "http://localhost:8710/signin/oidc/callback"

// newProvider starts a test provider with alice in finance-approvers, and
// the relying party of it.
func newProvider(t *testing.T) (*idptest.Provider, *Provider) {
	t.Helper()
	idp := idptest.New(t)
	idp.AddUser("alice", "alice@example.com", "finance-approvers", "staff")
	idp.AddClient("countersign", "s3cret", []string{redirect}, idptest.GrantAuthorizationCode, idptest.GrantRefreshToken)
	rp := New(Config{
		Identity: config.Identity{
			Issuer: idp.Issuer(), ClientID: "countersign", ClientSecret: "s3cret",
			Scopes: []string{"openid", "email", "profile", "offline_access"}, SubjectClaim: "sub", GroupsClaim: "groups",
			Roles: map[string][]string{"treasury": {"finance-approvers"}, "ops": {"sre"}}, Recheck: 5 * time.Minute,
		},
		RedirectURL: redirect,
		MaxAuthAge:  12 * time.Hour,
	})
	return idp, rp
}

// signIn follows the browser's part of the code flow with a cookie jar,
// posting the provider's login form as user, up to the redirect back to
// us; it returns the state and code the callback would get.
func signIn(t *testing.T, authURL, user string) (state, code string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	var back *url.URL
	c := &http.Client{Jar: jar, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), redirect) {
			back = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}}
	res, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if back == nil { // the login form: post the user
		form := url.Values{"username": {user}, "authRequestID": {res.Request.URL.Query().Get("authRequestID")}}
		res, err = c.PostForm(res.Request.URL.Scheme+"://"+res.Request.URL.Host+"/login", form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	if back == nil {
		t.Fatalf("the provider did not send the browser back (status %d at %s)", res.StatusCode, res.Request.URL)
	}
	return back.Query().Get("state"), back.Query().Get("code")
}

func TestCodeFlowSignsInWithGroupsRolesAndAuthTime(t *testing.T) {
	idp, rp := newProvider(t)
	idp.SetAuthContext("urn:example:mfa", "pwd", "otp")
	ctx := context.Background()
	l := NewLogin(false)
	u, err := rp.AuthURL(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.Parse(u)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("nonce") != l.Nonce || q.Query().Get("state") != l.State ||
		q.Query().Get("max_age") != "43200" || q.Query().Get("prompt") != "" {
		t.Errorf("authorization URL lacks PKCE, nonce, state or max_age: %s", u)
	}
	before := time.Now().Add(-2 * time.Second)
	state, code := signIn(t, u, "alice")
	p, tok, err := rp.Finish(ctx, l, state, code)
	if err != nil {
		t.Fatal(err)
	}
	if p.Issuer != idp.Issuer() || p.Subject != "alice" || p.Email != "alice@example.com" ||
		!slices.Equal(p.Groups, []string{"finance-approvers", "staff"}) || !slices.Equal(p.Roles, []string{"treasury"}) ||
		p.ACR != "urn:example:mfa" || !slices.Equal(p.AMR, []string{"otp", "pwd"}) || p.AuthTime.Before(before) {
		t.Errorf("person = %+v", p)
	}
	if tok.RefreshToken == "" {
		t.Error("no refresh token (offline_access was asked for)")
	}
	if id := p.Approver(); !IsApproverID(id) || !config.ValidID(id) || id != ApproverID(idp.Issuer(), "alice") {
		t.Errorf("approver id %q", id)
	}

	// A code is redeemed once; a second Finish with it is refused.
	if _, _, err := rp.Finish(ctx, l, state, code); !errors.Is(err, ErrRefused) {
		t.Errorf("code redeemed twice: %v", err)
	}
}

func TestFinishRefusesAnotherBrowsersStateOrNonce(t *testing.T) {
	idp, rp := newProvider(t)
	idp.SetAutoLogin("alice")
	ctx := context.Background()
	l := NewLogin(true)
	u, err := rp.AuthURL(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if q, _ := url.Parse(u); q.Query().Get("prompt") != "login" {
		t.Errorf("a fresh login is not asked for: %s", u)
	}
	state, code := signIn(t, u, "alice")
	other := NewLogin(false)
	if _, _, err := rp.Finish(ctx, other, state, code); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "state") {
		t.Errorf("another browser's state: %v", err)
	}
	// Same state, another nonce (and verifier): the ID token's nonce
	// is not this sign-in's, or the code's PKCE check fails first.
	forged := other
	forged.State = state
	if _, _, err := rp.Finish(ctx, forged, state, code); !errors.Is(err, ErrRefused) {
		t.Errorf("another nonce and verifier: %v", err)
	}
}

func TestProviderDownIsUnreachableAndRecheckSeesLeavers(t *testing.T) {
	idp, rp := newProvider(t)
	idp.SetAutoLogin("alice")
	ctx := context.Background()
	l := NewLogin(false)
	u, err := rp.AuthURL(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	state, code := signIn(t, u, "alice")
	_, tok, err := rp.Finish(ctx, l, state, code)
	if err != nil {
		t.Fatal(err)
	}

	groups, keep, err := rp.Recheck(ctx, tok.RefreshToken)
	if err != nil || !slices.Equal(groups, []string{"finance-approvers", "staff"}) || keep == "" {
		t.Fatalf("recheck = %v, %q, %v", groups, keep, err)
	}
	idp.SetGroups("alice", "staff")
	groups, keep, err = rp.Recheck(ctx, keep)
	if err != nil || !slices.Equal(groups, []string{"staff"}) || len(rp.RolesOf(groups)) != 0 {
		t.Fatalf("recheck after leaving the group = %v, %v", groups, err)
	}

	idp.Stop()
	if _, _, err := rp.Recheck(ctx, keep); !errors.Is(err, ErrUnreachable) {
		t.Errorf("provider down: %v", err)
	}
	idp.Start()

	idp.RemoveUser("alice")
	if _, _, err := rp.Recheck(ctx, keep); !errors.Is(err, ErrGone) {
		t.Errorf("removed person: %v", err)
	}
}

func TestDiscoveryWaitsForTheProvider(t *testing.T) {
	idp, rp := newProvider(t)
	idp.Stop()
	if _, err := rp.AuthURL(context.Background(), NewLogin(false)); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("provider down at first use: %v", err)
	}
	idp.Start()
	if _, err := rp.AuthURL(context.Background(), NewLogin(false)); err != nil {
		t.Fatalf("provider back: %v", err)
	}
}

func TestPeopleRememberWhatTheProviderSaid(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		pp, err := OpenPeople(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		p := &Person{Issuer: "https://login.example.com", Subject: "alice", Email: "alice@example.com",
			Groups: []string{"finance-approvers"}, Roles: []string{"treasury"}, AuthTime: time.Unix(1700000000, 0).UTC()}
		at := time.Unix(1700000100, 0)
		if err := pp.Remember(ctx, p, "rt-1", at); err != nil {
			t.Fatal(err)
		}
		p.Groups, p.Roles = nil, nil
		if err := pp.Remember(ctx, p, "", at.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		k, ok, err := pp.Get(ctx, p.Approver())
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		if k.RefreshToken != "rt-1" || len(k.Groups) != 0 || !k.Checked.Equal(at.Add(time.Minute)) || k.Email != "alice@example.com" {
			t.Errorf("known = %+v", k)
		}
		if _, ok, err := pp.Get(ctx, "idp-nobody"); ok || err != nil {
			t.Errorf("unknown: %v %v", ok, err)
		}
	})
}

// MayApprove (what a standing grant of a person of the provider needs at
// each use): listed ids pass; a person passes while the provider, asked
// again past recheck, puts them in a group of a role the decision names;
// a provider that cannot be asked lets nothing through.
func TestMayApproveAsksTheProviderPastRecheck(t *testing.T) {
	idp, rp := newProvider(t)
	idp.SetAutoLogin("alice")
	ctx := context.Background()
	l := NewLogin(false)
	u, err := rp.AuthURL(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	state, code := signIn(t, u, "alice")
	p, tok, err := rp.Finish(ctx, l, state, code)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.Connect(t, t.TempDir()+"/people.db")
	pp, err := OpenPeople(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	pp.Recheck(rp, 5*time.Minute, clock)
	var suspended []string
	pp.OnSuspend = func(_ context.Context, p *Person, why string) { suspended = append(suspended, p.Subject+": "+why) }
	if err := pp.Remember(ctx, p, tok.RefreshToken, clock()); err != nil {
		t.Fatal(err)
	}
	alice := p.Approver()
	may := func(approvers ...string) bool { return pp.MayApprove(ctx, alice, approvers) }
	if !pp.MayApprove(ctx, "bob", []string{"bob"}) {
		t.Error("a listed id")
	}
	if !may("role:treasury") {
		t.Error("alice for role:treasury")
	}
	if may("role:ops", "bob") {
		t.Error("alice for role:ops")
	}
	idp.SetGroups("alice", "staff")
	if !may("role:treasury") {
		t.Error("within recheck the provider was asked")
	}
	advance(6 * time.Minute)
	idp.Stop()
	if may("role:treasury") {
		t.Error("provider down: a grant of hers would apply")
	}
	if err := pp.Eligible(ctx, alice); !errors.Is(err, ErrUnreachable) {
		t.Errorf("provider down: %v", err)
	}
	idp.Start()
	if may("role:treasury") {
		t.Error("out of the group")
	}
	if err := pp.Eligible(ctx, alice); !errors.Is(err, ErrNotEligible) || !strings.Contains(err.Error(), "none of the groups") {
		t.Errorf("Eligible out of the group: %v", err)
	}
	// Told once, when she lost her last role; not again while she has none.
	if len(suspended) != 1 || !strings.Contains(suspended[0], "alice: the identity provider puts them in none of the groups") {
		t.Errorf("suspensions: %q", suspended)
	}
}
