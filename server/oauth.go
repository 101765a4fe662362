package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/countersign/countersign/config"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// The paths of this server's Protected Resource Metadata (RFC 9728): the
// path-suffixed one for the resource /mcp, which MCP clients try first, and
// the root one they fall back to.
const (
	metadataPath    = "/.well-known/oauth-protected-resource"
	metadataPathMCP = metadataPath + "/mcp"
)

// signingAlgs are the JWS algorithms accepted on access tokens: the
// asymmetric ones (never none, never a shared secret).
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// resourceServer checks OAuth access tokens as the MCP authorization
// specification asks of a server: JWTs signed by a key of the authorization
// server's JWKS, from its issuer, for this server's audience (RFC 8707), not
// expired nor early, with every required scope. The keys are cached; a key
// id not seen before makes it fetch the JWKS again, and when that fails the
// token is refused.
type resourceServer struct {
	issuer      string
	audience    string
	resource    string // this server's URL for clients (RFC 9728): the audience when that is a URL
	scopes      []string
	agentClaim  string
	metadataURL string
	reserved    map[string]bool // agent names a token may not take
	client      *http.Client
	log         *slog.Logger

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until the issuer's metadata was read
}

// newResourceServer returns nil when http.oauth is off. base is the URL
// agents reach this listener by (http.issuer, else the listener's). A token
// may not name an agent of reserved: those authenticate otherwise, and one
// name for two ways in would let either pass for the other.
func newResourceServer(o config.OAuth, base string, reserved []string, log *slog.Logger) *resourceServer {
	if !o.Enabled() {
		return nil
	}
	base = strings.TrimRight(base, "/")
	rs := &resourceServer{
		issuer: o.Issuer, audience: o.Audience, scopes: o.Scopes, agentClaim: o.AgentClaim,
		resource:    base + "/mcp",
		metadataURL: base + metadataPathMCP,
		reserved:    map[string]bool{},
		client:      &http.Client{Timeout: 10 * time.Second},
		log:         log,
	}
	for _, name := range reserved {
		rs.reserved[name] = true
	}
	if rs.audience == "" {
		rs.audience = rs.resource
	} else if u, err := url.Parse(rs.audience); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
		rs.resource = rs.audience
	}
	return rs
}

// liveAuth holds the resource server of each HTTP handler, rebuilt whole
// when a reload changes http.oauth or the agents' names, so that a request
// is checked entirely by one configuration: a token accepted before is
// accepted after only if the new one accepts it too. The key set already
// fetched is kept while the issuer and audience stay.
type liveAuth struct {
	mu       sync.Mutex
	oauth    config.OAuth
	reserved []string
	handlers []*liveResource
}

type liveResource struct {
	base string // what the resource URL derives from (http.issuer, else the listener's URL)
	log  *slog.Logger
	rs   atomic.Pointer[resourceServer] // nil: http.oauth is off
}

// add makes the resource server of one HTTP handler.
func (a *liveAuth) add(base string, log *slog.Logger) *atomic.Pointer[resourceServer] {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := &liveResource{base: base, log: log}
	h.rs.Store(newResourceServer(a.oauth, base, a.reserved, log))
	a.handlers = append(a.handlers, h)
	return &h.rs
}

// set puts o (when not nil) and reserved (when not nil) in force.
func (a *liveAuth) set(o *config.OAuth, reserved []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o != nil {
		a.oauth = *o
	}
	if reserved != nil {
		a.reserved = reserved
	}
	for _, h := range a.handlers {
		rs := newResourceServer(a.oauth, h.base, a.reserved, h.log)
		if old := h.rs.Load(); rs != nil && old != nil && old.issuer == rs.issuer && old.audience == rs.audience {
			old.mu.Lock()
			rs.verifier = old.verifier
			old.mu.Unlock()
		}
		h.rs.Store(rs)
	}
}

// metadata is this server's Protected Resource Metadata document.
func (rs *resourceServer) metadata() *oauthex.ProtectedResourceMetadata {
	return &oauthex.ProtectedResourceMetadata{
		Resource:               rs.resource,
		AuthorizationServers:   []string{rs.issuer},
		ScopesSupported:        rs.scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "Countersign",
	}
}

// refusal is why a request's token was not accepted, in RFC 6750's words.
type refusal struct {
	status      int
	code        string // invalid_token, insufficient_scope; "" when no token came
	description string
}

func (r *refusal) Error() string { return r.code + ": " + r.description }

// challenge writes the refusal: the WWW-Authenticate header names the
// metadata, so a client can find the authorization server, and the scopes,
// so it can ask for them (step-up on insufficient_scope).
func (rs *resourceServer) challenge(w http.ResponseWriter, r *refusal) {
	var params []string
	if r.code != "" {
		params = append(params, fmt.Sprintf("error=%q", r.code), fmt.Sprintf("error_description=%q", quotable(r.description)))
	}
	params = append(params, fmt.Sprintf("resource_metadata=%q", rs.metadataURL))
	if len(rs.scopes) > 0 {
		params = append(params, fmt.Sprintf("scope=%q", strings.Join(rs.scopes, " ")))
	}
	w.Header().Set("WWW-Authenticate", "Bearer "+strings.Join(params, ", "))
	msg := "an OAuth access token for " + rs.audience + " is required"
	if r.code != "" {
		msg = r.code + ": " + r.description
	}
	http.Error(w, msg, r.status)
}

// quotable keeps a description inside its quoted-string: RFC 6750 allows
// neither quotes nor backslashes in it.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r > '~' {
			return '\''
		}
		return r
	}, s)
}

// agent verifies an access token and returns the agent it names.
func (rs *resourceServer) agent(ctx context.Context, token string) (string, *refusal) {
	v, err := rs.keys(ctx)
	if err != nil {
		return "", &refusal{http.StatusUnauthorized, "invalid_token", "the authorization server cannot be reached to check the token: " + err.Error()}
	}
	idt, err := v.Verify(ctx, token)
	if err != nil {
		return "", &refusal{http.StatusUnauthorized, "invalid_token", verifyProblem(err)}
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", &refusal{http.StatusUnauthorized, "invalid_token", "unreadable claims"}
	}
	// An ID token of someone's sign-in is no access token, even when its
	// audience is ours: only ID tokens carry these.
	for _, idOnly := range []string{"nonce", "at_hash", "c_hash"} {
		if _, ok := claims[idOnly]; ok {
			return "", &refusal{http.StatusUnauthorized, "invalid_token", "an ID token is not an access token (it has " + idOnly + ")"}
		}
	}
	granted := grantedScopes(claims)
	for _, s := range rs.scopes {
		if !slices.Contains(granted, s) {
			return "", &refusal{http.StatusForbidden, "insufficient_scope", "the token lacks the scope " + s}
		}
	}
	claim, _ := claims[rs.agentClaim].(string)
	// Agent names are ids (the kill switch freezes only those); providers'
	// client ids are often mixed case.
	name := strings.ToLower(claim)
	switch {
	case claim == "":
		return "", &refusal{http.StatusUnauthorized, "invalid_token", "the token names no agent in its " + rs.agentClaim + " claim"}
	case !config.ValidID(name):
		return "", &refusal{http.StatusUnauthorized, "invalid_token", fmt.Sprintf("the token's %s %q cannot name an agent (letters, digits, . _ -, at most 64)", rs.agentClaim, claim)}
	case rs.reserved[name]:
		return "", &refusal{http.StatusUnauthorized, "invalid_token", fmt.Sprintf("the token's %s names the agent %s, which authenticates otherwise (a static token, stdio)", rs.agentClaim, name)}
	}
	return name, nil
}

// verifyProblem says which check a token failed, in a sentence for its client.
func verifyProblem(err error) string {
	var expired *oidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &expired) && expired.Expiry.IsZero():
		return "the token has no expiry (exp)"
	case errors.As(err, &expired):
		return "the token expired at " + expired.Expiry.UTC().Format(time.RFC3339)
	case strings.Contains(msg, "expected audience"):
		return "the token is not for this resource (aud)"
	case strings.Contains(msg, "id token issued by a different provider"):
		return "the token is not from the configured authorization server (iss)"
	case strings.Contains(msg, "nbf"):
		return "the token is not valid yet (nbf)"
	case strings.Contains(msg, "fetching keys"):
		return "the token's signing key is not known and the authorization server's keys cannot be fetched"
	case strings.Contains(msg, "signature") || strings.Contains(msg, "malformed") || strings.Contains(msg, "signing algorithm"):
		return "the token's signature does not verify against the authorization server's keys"
	}
	return "the token does not verify"
}

// grantedScopes reads scope (RFC 9068: space-separated) or scp (Okta, Entra
// ID: a list, or a string).
func grantedScopes(claims map[string]any) []string {
	var out []string
	for _, name := range []string{"scope", "scp"} {
		switch v := claims[name].(type) {
		case string:
			out = append(out, strings.Fields(v)...)
		case []any:
			for _, s := range v {
				if str, ok := s.(string); ok {
					out = append(out, str)
				}
			}
		}
	}
	return out
}

// keys reads the authorization server's metadata the first time a token
// comes, and keeps the verifier built on its JWKS; until that succeeds every
// token is refused.
func (rs *resourceServer) keys(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.verifier != nil {
		return rs.verifier, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	jwksURI, err := discoverJWKS(ctx, rs.client, rs.issuer)
	if err != nil {
		return nil, err
	}
	keySet := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), rs.client), jwksURI)
	rs.verifier = oidc.NewVerifier(rs.issuer, keySet, &oidc.Config{ClientID: rs.audience, SupportedSigningAlgs: signingAlgs})
	rs.log.Info("OAuth access tokens are checked against the authorization server's keys", "issuer", rs.issuer, "jwks_uri", jwksURI, "audience", rs.audience)
	return rs.verifier, nil
}

// discoverJWKS finds the issuer's key set where MCP clients look for its
// metadata (RFC 8414, then OpenID discovery, with the issuer's path inserted,
// then appended), and checks the document is the issuer's own. Unlike a
// client (go-sdk's auth.GetAuthServerMetadata) it does not ask for PKCE
// support: a resource server only needs the keys, and Entra ID's metadata
// does not list its PKCE methods.
func discoverJWKS(ctx context.Context, client *http.Client, issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return "", err
	}
	path := strings.Trim(u.Path, "/")
	var candidates []string
	for _, wellKnown := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		c := *u
		c.Path = wellKnown
		if path != "" {
			c.Path += "/" + path
		}
		candidates = append(candidates, c.String())
	}
	if path != "" {
		c := *u
		c.Path = "/" + path + "/.well-known/openid-configuration"
		candidates = append(candidates, c.String())
	}
	var problems []string
	for _, candidate := range candidates {
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		status, err := getJSON(ctx, client, candidate, &meta)
		switch {
		case err != nil:
			return "", err
		case status == http.StatusOK && meta.Issuer != issuer:
			return "", fmt.Errorf("%s names the issuer %q, not %q", candidate, meta.Issuer, issuer)
		case status == http.StatusOK && meta.JWKSURI == "":
			return "", fmt.Errorf("%s names no jwks_uri", candidate)
		case status == http.StatusOK:
			return meta.JWKSURI, nil
		}
		problems = append(problems, fmt.Sprintf("%s: %d", candidate, status))
	}
	return "", fmt.Errorf("no authorization server metadata for %s (%s)", issuer, strings.Join(problems, ", "))
}

// getJSON decodes a 200 answer into v; any other status is returned for the
// caller to try elsewhere.
func getJSON(ctx context.Context, client *http.Client, u string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return 0, fmt.Errorf("%s: %w", u, err)
	}
	return resp.StatusCode, nil
}
