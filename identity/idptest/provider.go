// Package idptest runs a real OpenID Provider in the test process, on
// 127.0.0.1:0, for tests of Countersign's identity features: approvers who sign
// in through a company's provider, and agents that present OAuth access tokens.
//
// The protocol is zitadel's (github.com/zitadel/oidc/v3/pkg/op): discovery, JWKS,
// the authorization code flow with PKCE, nonce and state, ID tokens, userinfo,
// refresh tokens, introspection, revocation and the client credentials grant.
// This package supplies only what zitadel leaves to its user: the directory
// (users, their groups, clients) kept in memory, the signing keys, and a login
// step that a test completes without a user interface, either by posting the
// login form (username only, no password) or by naming the user beforehand with
// [Provider.SetAutoLogin].
//
// Beyond zitadel, the provider adds what a resource server needs to be tested:
// JWT access tokens carry `scope`, and their `aud` is the RFC 8707 `resource`
// the client asked for (or the audience set with [Provider.SetClientAudience]).
// ID tokens and userinfo carry `email` (with the email scope), a `groups` claim,
// `auth_time`, `acr` and `amr`. A login session is remembered by a cookie, as a
// real provider does, unless the request says prompt=login or its max_age has
// passed.
//
// [Provider.Stop] and [Provider.Start] take the provider down and back on the same
// address, so that tests can show what happens while it cannot be reached.
package idptest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Grant is an OAuth grant type a client may use.
type Grant string

// The grants the provider offers.
const (
	GrantAuthorizationCode Grant = Grant(oidc.GrantTypeCode)
	GrantRefreshToken      Grant = Grant(oidc.GrantTypeRefreshToken)
	GrantClientCredentials Grant = Grant(oidc.GrantTypeClientCredentials)
)

const (
	loginPath        = "/login"
	authRequestParam = "authRequestID"
	sessionCookie    = "idptest_session"
)

// Provider is a running OpenID Provider. Its methods may be called from any
// goroutine; those that misuse it (an unknown user or client) fail the test.
type Provider struct {
	t       testing.TB
	store   *storage
	op      *op.Provider
	addr    string
	issuer  string
	handler http.Handler

	mu  sync.Mutex
	srv *http.Server
}

// New starts a provider on 127.0.0.1 and stops it when the test ends.
func New(t testing.TB) *Provider {
	t.Helper()
	store, err := newStorage()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("idptest: listen: %v", err)
	}
	p := &Provider{t: t, store: store, addr: ln.Addr().String()}
	p.issuer = "http://" + p.addr
	var key [32]byte
	rand.Read(key[:])
	config := &op.Config{
		CryptoKey:             key,
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedClaims:       append(slices.Clone(op.DefaultSupportedClaims), "groups"),
		SupportedScopes:       []string{oidc.ScopeOpenID, oidc.ScopeEmail, oidc.ScopeProfile, oidc.ScopeOfflineAccess},
	}
	p.op, err = op.NewProvider(config, store, op.StaticIssuer(p.issuer),
		op.WithAllowInsecure(), op.WithHttpInterceptors(resourceIndicators))
	if err != nil {
		ln.Close()
		t.Fatalf("idptest: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(loginPath, p.login)
	mux.Handle("/", p.op)
	p.handler = mux
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

// Issuer is the provider's issuer URL, http://127.0.0.1:port.
func (p *Provider) Issuer() string { return p.issuer }

// TokenURL is the token endpoint, as discovery also says.
func (p *Provider) TokenURL() string { return p.op.TokenEndpoint().Absolute(p.issuer) }

// AuthURL is the authorization endpoint, as discovery also says.
func (p *Provider) AuthURL() string { return p.op.AuthorizationEndpoint().Absolute(p.issuer) }

func (p *Provider) serve(ln net.Listener) {
	srv := &http.Server{Handler: p.handler, ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go srv.Serve(ln)
}

// Stop takes the provider down: its address refuses connections and open ones
// are closed. What it knows (users, clients, tokens, keys) is kept for Start.
func (p *Provider) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		p.srv.Close()
		p.srv = nil
	}
}

// Start brings a stopped provider back on the same address.
func (p *Provider) Start() {
	p.t.Helper()
	p.mu.Lock()
	running := p.srv != nil
	p.mu.Unlock()
	if running {
		return
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("idptest: listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// AddUser puts a person in the directory; name is their subject (`sub`) and
// preferred_username.
func (p *Provider) AddUser(name, email string, groups ...string) {
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name] = &user{name: name, email: email, groups: slices.Clone(groups)}
}

// SetGroups replaces a person's groups; tokens issued from now on, and userinfo
// at once, carry the new ones.
func (p *Provider) SetGroups(name string, groups ...string) {
	p.t.Helper()
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	if !ok {
		p.t.Fatalf("idptest: SetGroups: no user %q", name)
	}
	u.groups = slices.Clone(groups)
}

// RemoveUser takes a person out of the directory, as for a leaver: their login
// sessions end, their refresh tokens and userinfo stop working, and they cannot
// sign in. Access tokens already issued stay valid until they expire, as JWTs do.
func (p *Provider) RemoveUser(name string) {
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.users, name)
	for id, sess := range s.sessions {
		if sess.user == name {
			delete(s.sessions, id)
		}
	}
	for tok, r := range s.refreshTokens {
		if r.user == name {
			delete(s.refreshTokens, tok)
		}
	}
}

// AddClient registers an OAuth client. An empty secret makes it a public client
// (PKCE, no client authentication); otherwise it authenticates with
// client_secret_basic or client_secret_post. Redirect URIs may be plain http.
func (p *Provider) AddClient(id, secret string, redirectURIs []string, grants ...Grant) {
	c := &client{id: id, secret: secret, redirects: slices.Clone(redirectURIs)}
	for _, g := range grants {
		c.grants = append(c.grants, oidc.GrantType(g))
	}
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = c
}

// SetClientAudience sets the `aud` of the client's client-credentials access
// tokens when it names no RFC 8707 resource.
func (p *Provider) SetClientAudience(id string, audience ...string) {
	p.t.Helper()
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		p.t.Fatalf("idptest: SetClientAudience: no client %q", id)
	}
	c.audience = slices.Clone(audience)
}

// SetTokenLifetime sets how long access tokens issued from now on live (an hour
// by default).
func (p *Provider) SetTokenLifetime(d time.Duration) {
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = d
}

// SetAuthContext sets the `acr` and `amr` recorded by logins from now on (none
// and ["pwd"] by default).
func (p *Provider) SetAuthContext(acr string, amr ...string) {
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acr, s.amr = acr, slices.Clone(amr)
}

// SetAutoLogin makes every login step sign in the named user at once, with a
// fresh auth_time, without the form; "" brings the form back.
func (p *Provider) SetAutoLogin(name string) {
	s := p.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.autoLogin = name
}

// RotateKey adds a new signing key: tokens are signed with it from now on, and
// the JWKS publishes it beside the older ones.
func (p *Provider) RotateKey() {
	p.t.Helper()
	if err := p.store.rotateKey(); err != nil {
		p.t.Fatal(err)
	}
}

// SignJWT signs arbitrary claims with the provider's current key (RS256, its
// kid in the header), for tokens the grants would not issue: expired ones, ones
// not yet valid, ones for another audience.
func (p *Provider) SignJWT(claims map[string]any) string {
	p.t.Helper()
	key, _ := p.store.SigningKey(context.Background())
	signer, err := op.SignerFromKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		p.t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		p.t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// resourceIndicators reads the RFC 8707 `resource` parameters of a request for
// the storage, and refuses one that is not an absolute URI without a fragment.
func resourceIndicators(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		resources := r.Form["resource"]
		for _, res := range resources {
			u, err := url.Parse(res)
			if err != nil || !u.IsAbs() || u.Fragment != "" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{
					"error":             "invalid_target",
					"error_description": "resource must be an absolute URI without a fragment",
				})
				return
			}
		}
		if len(resources) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), resourceKey{}, resources))
		}
		next.ServeHTTP(w, r)
	})
}
