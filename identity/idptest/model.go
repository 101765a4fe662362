package idptest

import (
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// authRequest is one authorization request from its /authorize until its code is
// redeemed; the login step fills in who signed in and when.
type authRequest struct {
	id        string
	req       oidc.AuthRequest
	resources []string
	created   time.Time

	user     string
	authTime time.Time
	acr      string
	amr      []string
	done     bool
}

// snapshot is a copy for zitadel's op to read while the provider's lock is not held.
func (a *authRequest) snapshot() *authRequest {
	c := *a
	c.amr = slices.Clone(a.amr)
	return &c
}

func (a *authRequest) GetID() string          { return a.id }
func (a *authRequest) GetACR() string         { return a.acr }
func (a *authRequest) GetAMR() []string       { return a.amr }
func (a *authRequest) GetAuthTime() time.Time { return a.authTime }
func (a *authRequest) GetClientID() string    { return a.req.ClientID }
func (a *authRequest) GetNonce() string       { return a.req.Nonce }
func (a *authRequest) GetRedirectURI() string { return a.req.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType {
	return a.req.ResponseType
}
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.req.ResponseMode }
func (a *authRequest) GetScopes() []string                { return a.req.Scopes }
func (a *authRequest) GetState() string                   { return a.req.State }
func (a *authRequest) GetSubject() string                 { return a.user }
func (a *authRequest) Done() bool                         { return a.done }

// GetAudience names the client, as an ID token's aud must, and the resources it
// asked for (RFC 8707), which the access token of the same request carries.
func (a *authRequest) GetAudience() []string {
	return append([]string{a.req.ClientID}, a.resources...)
}

func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.req.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.req.CodeChallenge, Method: a.req.CodeChallengeMethod}
}

// forcesLogin reports whether the request asks for a fresh login instead of an
// existing session that signed in at authTime (prompt=login, or max_age passed).
func (a *authRequest) forcesLogin(authTime time.Time) bool {
	if slices.Contains(a.req.Prompt, oidc.PromptLogin) {
		return true
	}
	return a.req.MaxAge != nil && time.Since(authTime) > time.Duration(*a.req.MaxAge)*time.Second
}

// client is a registered OAuth client. Without a secret it is public and must
// use PKCE.
type client struct {
	id        string
	secret    string
	redirects []string
	grants    []oidc.GrantType
	audience  []string
}

func (c *client) GetID() string                    { return c.id }
func (c *client) RedirectURIs() []string           { return c.redirects }
func (c *client) PostLogoutRedirectURIs() []string { return c.redirects }
func (c *client) ApplicationType() op.ApplicationType {
	return op.ApplicationTypeWeb
}

func (c *client) AuthMethod() oidc.AuthMethod {
	if c.secret == "" {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType        { return c.grants }
func (c *client) LoginURL(id string) string           { return loginPath + "?" + authRequestParam + "=" + id }
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration      { return time.Hour }

// DevMode lets the tests' redirect URIs be plain http on 127.0.0.1.
func (c *client) DevMode() bool { return true }

func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c *client) IsScopeAllowed(string) bool { return true }

// IDTokenUserinfoClaimsAssertion puts email and groups in the ID token even when an
// access token comes with it, as the relying party reads them from there.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
