package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// CheckError names the check a token failed. Test with errors.Is against
// the Err* values below.
type CheckError struct {
	Check  string
	Detail string
}

func (e *CheckError) Error() string {
	if e.Detail == "" {
		return "token: " + e.Check
	}
	return "token: " + e.Check + ": " + e.Detail
}

// Is matches any CheckError with the same Check.
func (e *CheckError) Is(target error) bool {
	t, ok := target.(*CheckError)
	return ok && t.Check == e.Check
}

func failf(base *CheckError, format string, args ...any) *CheckError {
	return &CheckError{Check: base.Check, Detail: fmt.Sprintf(format, args...)}
}

// The checks, in the order Verify runs them.
var (
	ErrMalformed = &CheckError{Check: "malformed"} // not a compact JWS with one signature
	ErrAlgorithm = &CheckError{Check: "alg"}       // alg is not EdDSA
	ErrType      = &CheckError{Check: "typ"}       // typ is not countersign-approval+jwt
	ErrKey       = &CheckError{Check: "kid"}       // no key in the set has this kid
	ErrSignature = &CheckError{Check: "signature"} // the signature does not verify
	ErrClaims    = &CheckError{Check: "claims"}    // a claim is missing or malformed
	ErrIssuer    = &CheckError{Check: "iss"}       // not the expected issuer
	ErrAudience  = &CheckError{Check: "aud"}       // not the expected audience
	ErrLifetime  = &CheckError{Check: "lifetime"}  // exp not after iat, or more than MaxLifetime after it
	ErrNotYet    = &CheckError{Check: "iat"}       // issued in the future
	ErrExpired   = &CheckError{Check: "exp"}       // expired
)

// VerifyOptions say what a verifier expects beyond a valid signature.
type VerifyOptions struct {
	Issuer   string // when set, iss must equal it
	Audience string // when set, aud must equal it
	// Now is the time to check iat and exp against; default time.Now.
	Now func() time.Time
	// Leeway tolerates clock skew on iat and exp; default 30s.
	Leeway time.Duration
}

// Verify checks a compact JWS approval token against a key set and returns
// its claims. Only EdDSA with an Ed25519 key from keys whose kid matches the
// header is accepted; there is no other way in (no embedded jwk, no x5c, no
// "none").
func Verify(raw string, keys jose.JSONWebKeySet, opts VerifyOptions) (*Claims, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Leeway <= 0 {
		opts.Leeway = 30 * time.Second
	}
	raw = strings.TrimSpace(raw)
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, failf(ErrMalformed, "not a compact JWS (three base64url parts)")
	}
	// The header is read before go-jose parses the token, so that a wrong
	// alg is reported as such rather than as a parse failure.
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, failf(ErrMalformed, "header: %v", err)
	}
	if err := noDuplicateKeys(hb); err != nil {
		return nil, failf(ErrMalformed, "header: %v", err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, failf(ErrMalformed, "header: %v", err)
	}
	if hdr.Alg != string(jose.EdDSA) {
		return nil, failf(ErrAlgorithm, "alg %q, want EdDSA", hdr.Alg)
	}
	obj, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return nil, failf(ErrMalformed, "%v", err)
	}
	if len(obj.Signatures) != 1 {
		return nil, failf(ErrMalformed, "%d signatures, want 1", len(obj.Signatures))
	}
	h := obj.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != Type {
		return nil, failf(ErrType, "typ %q, want %q", typ, Type)
	}
	if h.JSONWebKey != nil {
		return nil, failf(ErrKey, "the header carries its own key; only the published key set is trusted")
	}
	if crit, ok := h.ExtraHeaders["crit"]; ok {
		return nil, failf(ErrMalformed, "critical header extension %v is not understood", crit)
	}
	var pub ed25519.PublicKey
	for _, k := range keys.Key(h.KeyID) {
		if p, ok := k.Key.(ed25519.PublicKey); ok && h.KeyID != "" {
			pub = p
			break
		}
	}
	if pub == nil {
		return nil, failf(ErrKey, "no Ed25519 key with kid %q in the key set", h.KeyID)
	}
	payload, err := obj.Verify(pub)
	if err != nil {
		return nil, failf(ErrSignature, "%v", err)
	}
	c, err := decodeClaims(payload)
	if err != nil {
		return nil, err
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	if opts.Issuer != "" && c.Issuer != opts.Issuer {
		return nil, failf(ErrIssuer, "iss %q, want %q", c.Issuer, opts.Issuer)
	}
	if opts.Audience != "" && c.Audience != opts.Audience {
		return nil, failf(ErrAudience, "aud %q, want %q", c.Audience, opts.Audience)
	}
	if c.Expiry <= c.IssuedAt || c.Expiry-c.IssuedAt > int64(MaxLifetime/time.Second) {
		return nil, failf(ErrLifetime, "exp - iat = %ds, want 1 to %d", c.Expiry-c.IssuedAt, int(MaxLifetime.Seconds()))
	}
	now := opts.Now()
	if c.IssuedAtTime().After(now.Add(opts.Leeway)) {
		return nil, failf(ErrNotYet, "issued at %s, after %s", c.IssuedAtTime().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(c.ExpiryTime().Add(opts.Leeway)) {
		return nil, failf(ErrExpired, "expired at %s", c.ExpiryTime().Format(time.RFC3339))
	}
	return c, nil
}

// decodeClaims decodes the payload strictly: a JSON object without
// repeated or unknown members, since two readers of an ambiguous token
// could take different claims from it.
func decodeClaims(payload []byte) (*Claims, error) {
	if err := noDuplicateKeys(payload); err != nil {
		return nil, failf(ErrClaims, "%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var c Claims
	if err := dec.Decode(&c); err != nil {
		return nil, failf(ErrClaims, "%v", err)
	}
	if dec.More() {
		return nil, failf(ErrClaims, "data after the claims object")
	}
	return &c, nil
}

// check reports the first claim that is missing or malformed.
func (c *Claims) check() error {
	bad := func(format string, args ...any) error { return failf(ErrClaims, format, args...) }
	switch {
	case c.Issuer == "":
		return bad("iss is missing")
	case c.Audience == "":
		return bad("aud is missing")
	case c.IssuedAt <= 0 || c.Expiry <= 0:
		return bad("iat and exp are required")
	case c.AuthReqID == "":
		return bad("%s is missing", AuthReqIDClaim)
	case c.Tool == "":
		return bad("tool is missing")
	case !isHex32(c.ArgsSHA256):
		return bad("args_sha256 %q is not 64 hex digits", c.ArgsSHA256)
	case !isHex32(c.Digest):
		return bad("digest %q is not 64 hex digits", c.Digest)
	case len(c.Approvers) == 0:
		return bad("approvers is empty: an approval token names who approved")
	}
	var details []json.RawMessage
	if err := json.Unmarshal(c.AuthorizationDetails, &details); err != nil || details == nil {
		return bad("authorization_details is not a JSON array")
	}
	seen := map[string]bool{}
	for i, a := range c.Approvers {
		if a.ID == "" || seen[a.ID] {
			return bad("approvers[%d]: id %q is empty or repeated", i, a.ID)
		}
		seen[a.ID] = true
		if _, err := time.Parse(time.RFC3339, a.At); err != nil {
			return bad("approvers[%d].at %q is not RFC 3339", i, a.At)
		}
		if a.AssertionSHA256 != "" && !isHex32(a.AssertionSHA256) {
			return bad("approvers[%d].assertion_sha256 %q is not 64 hex digits", i, a.AssertionSHA256)
		}
	}
	return nil
}

func isHex32(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && strings.ToLower(s) == s
}

// noDuplicateKeys walks a JSON value and refuses an object that names a
// member twice.
func noDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(depth int) error
	walk = func(depth int) error {
		if depth > 64 {
			return errors.New("nested too deeply")
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch d {
		case '{':
			keys := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				ks, _ := k.(string)
				if keys[ks] {
					return fmt.Errorf("member %q appears twice", ks)
				}
				keys[ks] = true
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
		case '[':
			for dec.More() {
				if err := walk(depth + 1); err != nil {
					return err
				}
			}
		}
		_, err = dec.Token() // the closing delimiter
		return err
	}
	return walk(0)
}

// ParseKeySet parses a JWK Set and refuses one that holds anything but
// public Ed25519 signing keys: a set with a private key in it was published
// by mistake, and should not be used until that is fixed.
func ParseKeySet(data []byte) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return set, fmt.Errorf("token: key set: %w", err)
	}
	if len(set.Keys) == 0 {
		return set, errors.New("token: key set has no keys")
	}
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return set, fmt.Errorf("token: key set: key %d (kid %q) is a private key; publish only public keys", i, k.KeyID)
		}
		if _, ok := k.Key.(ed25519.PublicKey); !ok {
			return set, fmt.Errorf("token: key set: key %d (kid %q) is %T, want Ed25519", i, k.KeyID, k.Key)
		}
	}
	return set, nil
}
