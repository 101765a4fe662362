package idptest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// errNotFound is what the storage answers for an unknown id; zitadel's op turns it
// into the protocol's error for the endpoint asking.
var errNotFound = errors.New("idptest: not found")

// storage is the provider's state, all in memory: users, clients, pending
// authorization requests, issued tokens, login sessions and signing keys. It
// implements op.Storage and op.ClientCredentialsStorage, which is what makes
// zitadel's op offer the client credentials grant.
type storage struct {
	mu            sync.Mutex
	users         map[string]*user
	clients       map[string]*client
	authRequests  map[string]*authRequest
	codes         map[string]string // code -> auth request id
	accessTokens  map[string]*accessToken
	refreshTokens map[string]*refreshToken
	sessions      map[string]*session
	keys          []*signingKey // the last one signs; all are published
	tokenLifetime time.Duration
	acr           string
	amr           []string
	autoLogin     string
}

func newStorage() (*storage, error) {
	s := &storage{
		users:         map[string]*user{},
		clients:       map[string]*client{},
		authRequests:  map[string]*authRequest{},
		codes:         map[string]string{},
		accessTokens:  map[string]*accessToken{},
		refreshTokens: map[string]*refreshToken{},
		sessions:      map[string]*session{},
		tokenLifetime: time.Hour,
		amr:           []string{"pwd"},
	}
	if err := s.rotateKey(); err != nil {
		return nil, err
	}
	return s, nil
}

type user struct {
	name   string
	email  string
	groups []string
}

type session struct {
	user     string
	authTime time.Time
	acr      string
	amr      []string
}

type accessToken struct {
	id       string
	subject  string
	clientID string
	audience []string
	scopes   []string
	expires  time.Time
}

// refreshToken is both what is stored and the op.RefreshTokenRequest handed back
// when it is redeemed.
type refreshToken struct {
	token    string
	user     string
	clientID string
	audience []string
	scopes   []string
	authTime time.Time
	amr      []string
}

func (r *refreshToken) GetAMR() []string                 { return r.amr }
func (r *refreshToken) GetAudience() []string            { return r.audience }
func (r *refreshToken) GetAuthTime() time.Time           { return r.authTime }
func (r *refreshToken) GetClientID() string              { return r.clientID }
func (r *refreshToken) GetScopes() []string              { return r.scopes }
func (r *refreshToken) GetSubject() string               { return r.user }
func (r *refreshToken) SetCurrentScopes(scopes []string) { r.scopes = scopes }

// clientTokenRequest is a client credentials grant: the client is its own subject.
type clientTokenRequest struct {
	clientID string
	audience []string
	scopes   []string
}

func (c *clientTokenRequest) GetSubject() string    { return c.clientID }
func (c *clientTokenRequest) GetAudience() []string { return c.audience }
func (c *clientTokenRequest) GetScopes() []string   { return c.scopes }

func randomID() string {
	return rand.Text()
}

// signingKey is one RSA key, both op.SigningKey (private) and op.Key (published).
type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k *signingKey) ID() string                                  { return k.id }
func (k *signingKey) Use() string                                 { return "sig" }

// Key is the private key when signing; publishedKey hands out the public half.
func (k *signingKey) Key() any { return k.key }

type publishedKey struct{ *signingKey }

func (k publishedKey) Key() any { return &k.key.PublicKey }

func (s *storage) rotateKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("idptest: generate signing key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, &signingKey{id: randomID(), key: key})
	return nil
}

// resourceKey carries the RFC 8707 resource parameters of a request from the
// provider's interceptor to the storage, which zitadel's op does not pass on.
type resourceKey struct{}

func resourcesFrom(ctx context.Context) []string {
	r, _ := ctx.Value(resourceKey{}).([]string)
	return r
}

// AuthStorage

func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &authRequest{id: randomID(), req: *req, resources: resourcesFrom(ctx), created: time.Now()}
	s.authRequests[a.id] = a
	return a.snapshot(), nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.authRequests[id]
	if !ok {
		return nil, fmt.Errorf("auth request %q: %w", id, errNotFound)
	}
	return a.snapshot(), nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("code: %w", errNotFound)
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.authRequests[id]; !ok {
		return fmt.Errorf("auth request %q: %w", id, errNotFound)
	}
	s.codes[code] = id
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authRequests, id)
	for code, reqID := range s.codes {
		if reqID == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.newAccessToken(req)
	return t.id, t.expires, nil
}

func (s *storage) newAccessToken(req op.TokenRequest) *accessToken {
	t := &accessToken{
		id:       randomID(),
		subject:  req.GetSubject(),
		audience: req.GetAudience(),
		scopes:   req.GetScopes(),
		expires:  time.Now().Add(s.tokenLifetime),
	}
	switch r := req.(type) {
	case *clientTokenRequest:
		t.clientID = r.clientID
	case op.AuthRequest:
		t.clientID = r.GetClientID()
	case op.RefreshTokenRequest:
		t.clientID = r.GetClientID()
	}
	s.accessTokens[t.id] = t
	return t
}

func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.newAccessToken(req)
	r := &refreshToken{token: randomID(), user: req.GetSubject(), clientID: t.clientID, audience: req.GetAudience(), scopes: req.GetScopes()}
	switch old := req.(type) {
	case op.AuthRequest:
		r.authTime, r.amr = old.GetAuthTime(), old.GetAMR()
	case op.RefreshTokenRequest:
		r.authTime, r.amr = old.GetAuthTime(), old.GetAMR()
	}
	// Rotation: the redeemed refresh token is spent.
	delete(s.refreshTokens, current)
	s.refreshTokens[r.token] = r
	return t.id, r.token, t.expires, nil
}

// TokenRequestByRefreshToken refuses a refresh token whose user has been
// removed, as a directory does for a leaver.
func (s *storage) TokenRequestByRefreshToken(_ context.Context, token string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refreshTokens[token]
	if !ok {
		return nil, op.ErrInvalidRefreshToken
	}
	if _, ok := s.users[r.user]; !ok {
		return nil, fmt.Errorf("user %q: %w", r.user, errNotFound)
	}
	c := *r
	return &c, nil
}

func (s *storage) TerminateSession(_ context.Context, userID, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sess := range s.sessions {
		if sess.user == userID {
			delete(s.sessions, id)
		}
	}
	return nil
}

func (s *storage) RevokeToken(_ context.Context, tokenOrID, _, _ string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.accessTokens, tokenOrID)
	delete(s.refreshTokens, tokenOrID)
	return nil
}

func (s *storage) GetRefreshTokenInfo(_ context.Context, _, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refreshTokens[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return r.user, r.token, nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1], nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]op.Key, 0, len(s.keys))
	for _, k := range s.keys {
		keys = append(keys, publishedKey{k})
	}
	return keys, nil
}

// OPStorage

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q: %w", id, errNotFound)
	}
	return c, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	_, err := s.ClientCredentials(ctx, id, secret)
	return err
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil // deprecated by zitadel in favour of SetUserinfoFromRequest
}

// SetUserinfoFromRequest fills the ID token's claims from the user as the
// directory knows them now.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	return s.fillUserinfo(info, req.GetSubject(), scopes)
}

// SetUserinfoFromToken answers the userinfo endpoint: the token must still be
// live and its user still in the directory, with their groups of this moment.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t, ok := s.accessTokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		return fmt.Errorf("access token: %w", errNotFound)
	}
	if t.subject != subject {
		return errors.New("idptest: access token subject mismatch")
	}
	return s.fillUserinfo(info, subject, t.scopes)
}

func (s *storage) fillUserinfo(info *oidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("user %q: %w", subject, errNotFound)
	}
	info.Subject = u.name
	if slices.Contains(scopes, oidc.ScopeEmail) {
		info.Email = u.email
		info.EmailVerified = true
	}
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.PreferredUsername = u.name
		info.Name = u.name
	}
	info.AppendClaims("groups", slices.Clone(u.groups))
	return nil
}

func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	t, ok := s.accessTokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) || t.subject != subject {
		return fmt.Errorf("access token: %w", errNotFound)
	}
	resp.Active = true
	resp.Subject = t.subject
	resp.ClientID = t.clientID
	resp.Audience = t.audience
	resp.Scope = t.scopes
	resp.Expiration = oidc.FromTime(t.expires)
	return nil
}

// GetPrivateClaimsFromRequest puts the granted scopes in the JWT access token as
// `scope`, which zitadel's op leaves out and a resource server checks.
func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	return map[string]any{"scope": strings.Join(req.GetScopes(), " ")}, nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("idptest: JWT profile client authentication is not offered")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("idptest: the JWT profile grant is not offered")
}

func (s *storage) Health(context.Context) error { return nil }

// ClientCredentialsStorage

func (s *storage) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q: %w", id, errNotFound)
	}
	if c.secret == "" || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return nil, fmt.Errorf("client %q: wrong secret", id)
	}
	return c, nil
}

// ClientCredentialsTokenRequest sets the token's audience: the RFC 8707 resource
// the client asked for, else the audience configured for the client, else the
// client itself.
func (s *storage) ClientCredentialsTokenRequest(ctx context.Context, id string, scopes []string) (op.TokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q: %w", id, errNotFound)
	}
	aud := resourcesFrom(ctx)
	if len(aud) == 0 {
		aud = slices.Clone(c.audience)
	}
	if len(aud) == 0 {
		aud = []string{id}
	}
	return &clientTokenRequest{clientID: id, audience: aud, scopes: scopes}, nil
}
