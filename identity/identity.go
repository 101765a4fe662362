// Package identity is Countersign's relying party of the company's OpenID
// Provider (identity: in mcp.yaml): approvers sign in on the approval page
// through the provider, and their groups there give them Countersign roles.
//
// The sign-in is OpenID Connect's authorization code flow (RFC 6749 with
// PKCE S256, RFC 7636), with a fresh state and nonce per attempt; the ID
// token is verified by github.com/coreos/go-oidc against the provider's
// JWKS (signature, iss, aud = our client_id, exp), then its nonce and its
// auth_time are checked here. What a sign-in yields is a [Person]: the
// issuer and subject that name them, their email, the groups the provider
// listed and the roles those groups map to, when they authenticated
// (auth_time) and how (acr, amr).
//
// A person is known to the rest of Countersign by an approver id derived
// from their issuer and subject ([ApproverID]); [People] keeps what the
// provider last said of each, so that a decision can be checked against
// it, and asked again ([Provider.Recheck]) when it is older than
// identity.recheck.
//
// The provider is discovered on first use, not at start: a provider that
// cannot be reached stops sign-ins and approvals (fail closed), never the
// server, and never a denial.
package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
)

// Errors callers test with errors.Is.
var (
	// ErrUnreachable: the provider could not be asked (discovery, token,
	// keys or userinfo endpoint down or answering nonsense).
	ErrUnreachable = errors.New("identity: the identity provider cannot be reached")
	// ErrRefused: the provider's answer does not sign this person in
	// (state, nonce, token, a claim missing or wrong).
	ErrRefused = errors.New("identity: sign-in refused")
	// ErrStale: the provider vouched for a login older than
	// approval.max_auth_age (it ignored max_age, or resumed an old
	// session): ask it for a fresh one. It is also an ErrRefused.
	ErrStale = fmt.Errorf("%w: the login at the identity provider is older than approval.max_auth_age", ErrRefused)
)

// Config configures a Provider.
type Config struct {
	config.Identity
	// RedirectURL is where the provider sends the browser back: the
	// approval page's callback, registered with the provider.
	RedirectURL string
	// MaxAuthAge is approval.max_auth_age: a sign-in whose auth_time is
	// older is refused, and the provider is asked for a fresh login.
	MaxAuthAge time.Duration
	// HTTPClient talks to the provider; nil: http.DefaultClient.
	HTTPClient *http.Client
	Now        func() time.Time
}

// Person is someone the provider signed in, as it described them.
type Person struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"` // the value of identity.subject_claim
	Email   string `json:"email,omitempty"`
	Name    string `json:"name,omitempty"`
	// Groups are the provider's groups of the person (identity.groups_claim),
	// sorted; Roles the Countersign roles they map to.
	Groups   []string  `json:"groups"`
	Roles    []string  `json:"roles"`
	AuthTime time.Time `json:"auth_time"`
	ACR      string    `json:"acr,omitempty"`
	AMR      []string  `json:"amr,omitempty"`
}

// Approver is the approver id Countersign knows the person by.
func (p *Person) Approver() string { return ApproverID(p.Issuer, p.Subject) }

// DisplayName is the person's name, else email, else subject.
func (p *Person) DisplayName() string {
	for _, s := range []string{p.Name, p.Email, p.Subject} {
		if s != "" {
			return s
		}
	}
	return ""
}

// ApproverID derives the approver id of the person the issuer names
// subject: "idp-" and 16 base32 letters of SHA-256(issuer "\n" subject)
// (audit.IdPApproverID, which an auditor recomputes).
// It is stable across sign-ins, a valid approver id (config.ValidID), and
// never equal to an id written in mcp.yaml's approvers unless someone
// writes it there on purpose.
func ApproverID(issuer, subject string) string { return audit.IdPApproverID(issuer, subject) }

// IsApproverID reports whether id has the form ApproverID gives.
func IsApproverID(id string) bool {
	rest, ok := strings.CutPrefix(id, "idp-")
	return ok && len(rest) == 16 && strings.Trim(rest, "abcdefghijklmnopqrstuvwxyz234567") == ""
}

// Provider is the relying party of one OpenID Provider.
type Provider struct {
	cfg Config

	mu       sync.Mutex
	op       *oidc.Provider // discovered; nil until the first success
	verifier *oidc.IDTokenVerifier
}

// New returns the relying party; the provider is discovered on first use.
func New(cfg Config) *Provider {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &Provider{cfg: cfg}
}

// Issuer is the configured issuer.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// RolesOf maps groups to roles under identity.roles.
func (p *Provider) RolesOf(groups []string) []string { return p.cfg.RolesOf(groups) }

func (p *Provider) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, p.cfg.HTTPClient)
}

// discover reads the provider's discovery document once it can.
func (p *Provider) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.op != nil {
		return p.op, p.verifier, nil
	}
	op, err := oidc.NewProvider(p.ctx(ctx), p.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: discovery at %s: %v", ErrUnreachable, p.cfg.Issuer, err)
	}
	p.op = op
	// The token's exp is the provider's clock against this machine's;
	// Config.Now is the page's, for max_auth_age.
	p.verifier = op.VerifierContext(p.ctx(context.Background()), &oidc.Config{ClientID: p.cfg.ClientID})
	return p.op, p.verifier, nil
}

func (p *Provider) oauth2(op *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  p.cfg.RedirectURL,
		Scopes:       p.cfg.Scopes,
	}
}

// Login is one sign-in attempt's secrets: the state the callback must
// carry back, the nonce the ID token must carry, and the PKCE verifier.
// The page keeps it (in a cookie of its own) between the redirect and the
// callback.
type Login struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	// Fresh: this attempt asked the provider for a fresh login.
	Fresh bool `json:"fresh,omitempty"`
}

// NewLogin makes a sign-in attempt's secrets; fresh asks the provider
// for a fresh login (prompt=login).
func NewLogin(fresh bool) Login {
	return Login{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), Fresh: fresh}
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// AuthURL is where to send the browser to sign in: the provider's
// authorization endpoint with the login's state, nonce and PKCE
// challenge, and max_age (approval.max_auth_age), and prompt=login when
// the login is fresh.
func (p *Provider) AuthURL(ctx context.Context, l Login) (string, error) {
	op, _, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(l.Verifier), oidc.Nonce(l.Nonce)}
	if p.cfg.MaxAuthAge > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("max_age", fmt.Sprint(int64(p.cfg.MaxAuthAge/time.Second))))
	}
	if l.Fresh {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login"))
	}
	return p.oauth2(op).AuthCodeURL(l.State, opts...), nil
}

// Finish redeems the code the provider sent back for an ID token and
// verifies it: signature (JWKS), issuer, audience, expiry, the login's
// nonce, an auth_time within max_auth_age, and the subject claim. The
// groups come from the ID token, else from userinfo. The token is kept
// by the caller for Recheck.
func (p *Provider) Finish(ctx context.Context, l Login, state, code string) (*Person, *oauth2.Token, error) {
	if state == "" || state != l.State {
		return nil, nil, fmt.Errorf("%w: the state does not match this browser's sign-in", ErrRefused)
	}
	if code == "" {
		return nil, nil, fmt.Errorf("%w: the provider sent no code", ErrRefused)
	}
	op, verifier, err := p.discover(ctx)
	if err != nil {
		return nil, nil, err
	}
	tok, err := p.oauth2(op).Exchange(p.ctx(ctx), code, oauth2.VerifierOption(l.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, nil, fmt.Errorf("%w: the provider refused the code: %s", ErrRefused, oneLine(re.ErrorCode+" "+re.ErrorDescription))
		}
		return nil, nil, fmt.Errorf("%w: token endpoint: %v", ErrUnreachable, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, nil, fmt.Errorf("%w: the provider's answer has no ID token (is openid among identity.scopes?)", ErrRefused)
	}
	idt, err := verifier.Verify(p.ctx(ctx), raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: ID token: %v", ErrRefused, err)
	}
	if idt.Nonce != l.Nonce {
		return nil, nil, fmt.Errorf("%w: the ID token's nonce is not this sign-in's", ErrRefused)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, nil, fmt.Errorf("%w: ID token claims: %v", ErrRefused, err)
	}
	person, err := p.person(idt.Issuer, claims)
	if err != nil {
		return nil, nil, err
	}
	if _, listed := claims[p.cfg.GroupsClaim]; !listed {
		if person.Groups, err = p.userinfoGroups(ctx, op, oauth2.StaticTokenSource(tok)); err != nil {
			return nil, nil, err
		}
		person.Roles = p.RolesOf(person.Groups)
	}
	return person, tok, nil
}

// person reads the claims that describe someone.
func (p *Provider) person(issuer string, claims map[string]any) (*Person, error) {
	str := func(k string) string { s, _ := claims[k].(string); return s }
	person := &Person{Issuer: issuer, Email: str("email"), Name: str("name"), ACR: str("acr"), AMR: stringList(claims["amr"])}
	person.Subject = str(p.cfg.SubjectClaim)
	if person.Subject == "" {
		return nil, fmt.Errorf("%w: the ID token has no %s claim (identity.subject_claim)", ErrRefused, p.cfg.SubjectClaim)
	}
	if p.cfg.SubjectClaim == "email" {
		if v, ok := claims["email_verified"].(bool); ok && !v {
			return nil, fmt.Errorf("%w: the provider has not verified the email %s that would name this person", ErrRefused, person.Email)
		}
	}
	at, ok := claims["auth_time"].(float64)
	if !ok || at <= 0 {
		return nil, fmt.Errorf("%w: the ID token has no auth_time (the provider must say when the person authenticated)", ErrRefused)
	}
	person.AuthTime = time.Unix(int64(at), 0).UTC()
	if p.cfg.MaxAuthAge > 0 && p.cfg.Now().Sub(person.AuthTime) > p.cfg.MaxAuthAge {
		return nil, fmt.Errorf("%w (%s, from %s)", ErrStale, p.cfg.MaxAuthAge, person.AuthTime.Format(time.RFC3339))
	}
	person.Groups = stringList(claims[p.cfg.GroupsClaim])
	person.Roles = p.RolesOf(person.Groups)
	return person, nil
}

// stringList reads a claim that is a list of strings (or one string).
func stringList(v any) []string {
	var out []string
	switch v := v.(type) {
	case string:
		out = []string{v}
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
