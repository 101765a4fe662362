// Package token is the approval token: a signed statement, which the system
// that performs an action can check for itself, that the humans named in it
// approved exactly this action with their security keys. It lets that
// system trust Countersign's key instead of whoever relays the call.
//
// A token is a JWS in compact form (RFC 7515), signed with EdDSA (Ed25519)
// and explicitly typed:
//
//	{"alg":"EdDSA","kid":"<RFC 7638 thumbprint, base64url>","typ":"countersign-approval+jwt"}
//
// Its payload is a JWT claims set (RFC 7519):
//
//	iss                    the issuer: Countersign's agent listener URL (config http.issuer)
//	aud                    the agent (CIBA: client_id) the approval was given to
//	iat, exp               NumericDate; exp is at most five minutes after iat
//	urn:openid:params:jwt:claim:auth_req_id
//	                       the approval request (CIBA auth_req_id)
//	tool                   what was approved: a tool name, or "ciba" for a backchannel request
//	args_sha256            hex SHA-256 of the RFC 8785 form of the approved arguments
//	authorization_details  the RFC 9396 array the approvers were shown
//	digest                 hex action digest (package digest) of (request, "approve"):
//	                       the WebAuthn challenge every approver's key signed, or,
//	                       for an approval given in a batch, one of the digests
//	                       its batch challenge covers (digest.BatchChallenge)
//	approvers              [{"id": "alice", "at": "2026-05-01T12:00:00Z",
//	                         "assertion_sha256": "<hex>"}], one per approval counted
//
// assertion_sha256 is [digest.AssertionSHA256] of the approver's assertion,
// so an auditor holding the audit export finds each approval's entry (and
// checks the key's own signature there) from the token alone; digest equals
// the challenge recomputed from that entry, or for a batched approval the
// entry's batch_digests at its batch_position. The token does not repeat what
// only the log can prove: it is the server's word, checked against its key.
//
// The signing key is dedicated to tokens: an Ed25519 key derived with HKDF
// from the server's audit key ([DeriveKey]), so it needs no file of its own,
// yet a token key never signs a log entry or a checkpoint. The public key is
// published as a JWK Set (RFC 7517) at the agent listener's
// /.well-known/jwks.json and printed by `countersign token jwks`.
//
// A token is proof, not permission: it may be shown to anyone, and anyone
// holding it may show it again. A verifier that acts on it should check
// tool, args_sha256 or authorization_details against the action it is about
// to perform, and remember the auth_req_ids it has acted on so that one
// approval is acted on once.
package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Type is the JWS "typ" header of an approval token (RFC 8725 explicit
// typing), so that no other JWT can pass for one.
const Type = "countersign-approval+jwt"

// AuthReqIDClaim is the claim that names the approval request, as CIBA
// names it.
const AuthReqIDClaim = "urn:openid:params:jwt:claim:auth_req_id"

// MaxLifetime bounds exp - iat. A token states a fact that does not
// change, but a short life keeps a leaked one from being replayed for long
// and tells the verifier the statement is fresh.
const MaxLifetime = 5 * time.Minute

// MCPMetaKey is where an approval token travels in MCP messages: in the
// _meta of a countersigned call's result, and of the request Countersign
// sends an upstream server for an approved call.
const MCPMetaKey = "countersign/approval"

// Claims is the payload of an approval token.
type Claims struct {
	Issuer               string          `json:"iss"`
	Audience             string          `json:"aud"`
	IssuedAt             int64           `json:"iat"`
	Expiry               int64           `json:"exp"`
	AuthReqID            string          `json:"urn:openid:params:jwt:claim:auth_req_id"`
	Tool                 string          `json:"tool"`
	ArgsSHA256           string          `json:"args_sha256"`
	AuthorizationDetails json.RawMessage `json:"authorization_details"`
	Digest               string          `json:"digest"`
	Approvers            []Approver      `json:"approvers"`
}

// Approver is one approval counted towards the request's quorum.
type Approver struct {
	ID string `json:"id"`
	// At is when the approval was counted, RFC 3339 in UTC.
	At string `json:"at"`
	// AssertionSHA256 is digest.AssertionSHA256 of the approver's
	// WebAuthn assertion, in hex.
	AssertionSHA256 string `json:"assertion_sha256,omitempty"`
}

// IssuedAtTime and ExpiryTime return iat and exp as times.
func (c *Claims) IssuedAtTime() time.Time { return time.Unix(c.IssuedAt, 0).UTC() }
func (c *Claims) ExpiryTime() time.Time   { return time.Unix(c.Expiry, 0).UTC() }

// keyInfo separates the token key from every other use of the server key.
const keyInfo = "countersign/approval-token/v1"

// DeriveKey returns the token signing key for a server key: an Ed25519 key
// whose seed is HKDF-SHA256(server seed, info "countersign/approval-token/v1").
// Knowing the token key reveals nothing about the server key.
func DeriveKey(server ed25519.PrivateKey) (ed25519.PrivateKey, error) {
	if len(server) != ed25519.PrivateKeySize {
		return nil, errors.New("token: server key is not an Ed25519 private key")
	}
	seed, err := hkdf.Key(sha256.New, server.Seed(), nil, keyInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("token: derive key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// PublicJWK is the public half of key as a JWK, with kid set to its RFC
// 7638 thumbprint.
func PublicJWK(key ed25519.PublicKey) (jose.JSONWebKey, error) {
	jwk := jose.JSONWebKey{Key: key, Algorithm: string(jose.EdDSA), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("token: thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return jwk, nil
}

// Signer issues approval tokens. It is safe for concurrent use.
type Signer struct {
	issuer  string
	priv    ed25519.PrivateKey
	jwk     jose.JSONWebKey
	retired []retiredJWK
	signer  jose.Signer
	ttl     time.Duration
	now     func() time.Time
}

// SignerOptions tune a Signer; the zero value is ready to use.
type SignerOptions struct {
	// Lifetime is exp - iat; default and maximum MaxLifetime.
	Lifetime time.Duration
	Now      func() time.Time
	// Retired are token keys of server keys rotated away (audit
	// rotate-key): the key set publishes each until its Until, so that
	// tokens signed before the rotation verify for their whole lifetime.
	Retired []RetiredKey
}

// RetiredKey is a token key no longer signing, published until Until
// (the rotation plus MaxLifetime: no token it signed lives longer).
type RetiredKey struct {
	Public ed25519.PublicKey
	Until  time.Time
}

// NewSigner returns a Signer for tokens from issuer, signed with key (the
// token key, see DeriveKey).
func NewSigner(key ed25519.PrivateKey, issuer string, opts SignerOptions) (*Signer, error) {
	if issuer == "" {
		return nil, errors.New("token: issuer is required")
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("token: key is not an Ed25519 private key")
	}
	jwk, err := PublicJWK(key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType(Type).WithHeader(jose.HeaderKey("kid"), jwk.KeyID))
	if err != nil {
		return nil, fmt.Errorf("token: signer: %w", err)
	}
	if opts.Lifetime <= 0 || opts.Lifetime > MaxLifetime {
		opts.Lifetime = MaxLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Signer{issuer: issuer, priv: key, jwk: jwk, signer: sig, ttl: opts.Lifetime, now: opts.Now}
	for _, r := range opts.Retired {
		j, err := PublicJWK(r.Public)
		if err != nil {
			return nil, err
		}
		s.retired = append(s.retired, retiredJWK{j, r.Until})
	}
	return s, nil
}

type retiredJWK struct {
	jwk   jose.JSONWebKey
	until time.Time
}

// Issuer is the iss of every token this Signer issues.
func (s *Signer) Issuer() string { return s.issuer }

// KeyID is the kid of the signing key.
func (s *Signer) KeyID() string { return s.jwk.KeyID }

// JWKS is the published key set: the public signing key, and each
// retired key until the last token it signed has expired.
func (s *Signer) JWKS() jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.jwk}}
	now := s.now()
	for _, r := range s.retired {
		if now.Before(r.until) {
			set.Keys = append(set.Keys, r.jwk)
		}
	}
	return set
}

// Sign sets iss, iat and exp on c, checks it is complete, and returns the
// compact JWS.
func (s *Signer) Sign(c Claims) (string, error) {
	now := s.now().UTC().Truncate(time.Second)
	c.Issuer = s.issuer
	c.IssuedAt = now.Unix()
	c.Expiry = now.Add(s.ttl).Unix()
	if err := c.check(); err != nil {
		return "", fmt.Errorf("token: refusing to sign: %w", err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token: encode claims: %w", err)
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	return obj.CompactSerialize()
}
