package token

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	jwxjwk "github.com/lestrrat-go/jwx/v3/jwk"
	jwxjws "github.com/lestrrat-go/jwx/v3/jws"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func sampleClaims() Claims {
	return Claims{
		Audience:             "ci-bot",
		AuthReqID:            "9d0c0a4e-8f5c-4a34-9c1e-2b8f0e6f3a11",
		Tool:                 "ciba",
		ArgsSHA256:           hex64,
		AuthorizationDetails: json.RawMessage(`[{"type":"deployment","service":"api","version":"1.4.2","environment":"production"}]`),
		Digest:               strings.Repeat("ab", 32),
		Approvers:            []Approver{{ID: "alice", At: "2026-05-01T12:00:00Z", AssertionSHA256: strings.Repeat("cd", 32)}},
	}
}

var testNow = time.Date(2026, 5, 1, 12, 0, 5, 0, time.UTC)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	_, server, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := DeriveKey(server)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(key, "http://127.0.0.1:8711", SignerOptions{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func at(t time.Time) VerifyOptions { return VerifyOptions{Now: func() time.Time { return t }} }

func TestSignVerifyRoundTrip(t *testing.T) {
	s := newSigner(t)
	raw, err := s.Sign(sampleClaims())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(raw, s.JWKS(), VerifyOptions{Issuer: s.Issuer(), Audience: "ci-bot", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	want := sampleClaims()
	want.Issuer, want.IssuedAt, want.Expiry = s.Issuer(), testNow.Unix(), testNow.Add(MaxLifetime).Unix()
	got, _ := json.Marshal(c)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(got, wantJSON) {
		t.Errorf("claims\n got %s\nwant %s", got, wantJSON)
	}
	hdr := decodePart(t, raw, 0)
	if hdr["alg"] != "EdDSA" || hdr["typ"] != Type || hdr["kid"] != s.KeyID() {
		t.Errorf("header %v", hdr)
	}
}

// The second implementation: lestrrat-go/jwx verifies what go-jose signed,
// from the JWK Set as JSON.
func TestIndependentImplementationVerifies(t *testing.T) {
	s := newSigner(t)
	s.now = time.Now
	raw, err := s.Sign(sampleClaims())
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(s.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwxjwk.Parse(jwks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwxjws.Verify([]byte(raw), jwxjws.WithKeySet(set)); err != nil {
		t.Fatalf("jwx: %v", err)
	}
	tok, err := jwxjwt.Parse([]byte(raw), jwxjwt.WithKeySet(set), jwxjwt.WithIssuer(s.Issuer()), jwxjwt.WithAudience("ci-bot"))
	if err != nil {
		t.Fatalf("jwx jwt: %v", err)
	}
	var digest string
	if err := tok.Get("digest", &digest); err != nil || digest != sampleClaims().Digest {
		t.Errorf("digest %q %v", digest, err)
	}
}

func TestDeriveKeyIsStableAndSeparate(t *testing.T) {
	_, server, _ := ed25519.GenerateKey(rand.Reader)
	a, _ := DeriveKey(server)
	b, _ := DeriveKey(server)
	if !a.Equal(b) {
		t.Error("derived key differs between calls")
	}
	if a.Equal(server) || bytes.Equal(a.Seed(), server.Seed()) {
		t.Error("derived key is the server key")
	}
	if _, err := DeriveKey(nil); err == nil {
		t.Error("nil server key accepted")
	}
}

func decodePart(t *testing.T, raw string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func encodePart(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Every claim altered, with the original signature kept, fails the
// signature check; so does a flipped signature byte.
func TestAlteredTokenFails(t *testing.T) {
	s := newSigner(t)
	raw, err := s.Sign(sampleClaims())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(raw, ".")
	payload := decodePart(t, raw, 1)
	alter := map[string]any{
		"iss": "http://evil.example", "aud": "someone-else", "iat": float64(testNow.Unix() - 1),
		"exp": float64(testNow.Unix() + 1), AuthReqIDClaim: "00000000-0000-4000-8000-000000000000",
		"tool": "transfer", "args_sha256": strings.Repeat("00", 32), "digest": strings.Repeat("ff", 32),
		"authorization_details": []any{map[string]any{"type": "deployment", "service": "api", "version": "6.6.6", "environment": "production"}},
		"approvers":             []any{map[string]any{"id": "mallory", "at": "2026-05-01T12:00:00Z"}},
	}
	for claim, v := range alter {
		if _, ok := payload[claim]; !ok {
			t.Fatalf("claim %s not in the token", claim)
		}
		p := map[string]any{}
		for k, x := range payload {
			p[k] = x
		}
		p[claim] = v
		forged := parts[0] + "." + encodePart(p) + "." + parts[2]
		if _, err := Verify(forged, s.JWKS(), at(testNow)); !errors.Is(err, ErrSignature) {
			t.Errorf("altered %s: %v, want a signature failure", claim, err)
		}
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[0] ^= 1
	forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	if _, err := Verify(forged, s.JWKS(), at(testNow)); !errors.Is(err, ErrSignature) {
		t.Errorf("flipped signature: %v", err)
	}
}

func TestHeaderAttacks(t *testing.T) {
	s := newSigner(t)
	raw, _ := s.Sign(sampleClaims())
	parts := strings.Split(raw, ".")
	hdr := decodePart(t, raw, 0)
	signingInput := func(h map[string]any) string { return encodePart(h) + "." + parts[1] }

	none := map[string]any{"alg": "none", "typ": Type, "kid": hdr["kid"]}
	if _, err := Verify(signingInput(none)+".", s.JWKS(), at(testNow)); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("alg none: %v", err)
	}
	// HS256 keyed with the public key's bytes: the classic confusion.
	hs := map[string]any{"alg": "HS256", "typ": Type, "kid": hdr["kid"]}
	mac := hmac.New(sha256.New, s.priv.Public().(ed25519.PublicKey))
	mac.Write([]byte(signingInput(hs)))
	if _, err := Verify(signingInput(hs)+"."+base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), s.JWKS(), at(testNow)); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("alg HS256: %v", err)
	}
	// A token signed by another key that names our kid, or embeds its key.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	for name, opts := range map[string]*jose.SignerOptions{
		"foreign key, our kid": (&jose.SignerOptions{}).WithType(Type).WithHeader("kid", s.KeyID()),
		"embedded jwk":         (&jose.SignerOptions{EmbedJWK: true}).WithType(Type),
		"JWT typ":              (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.KeyID()),
		"unknown kid":          (&jose.SignerOptions{}).WithType(Type).WithHeader("kid", "nope"),
	} {
		key := other
		if name == "JWT typ" {
			key = s.priv
		}
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		obj, _ := sig.Sign(payload)
		forged, _ := obj.CompactSerialize()
		want := map[string]error{"foreign key, our kid": ErrSignature, "embedded jwk": ErrKey, "JWT typ": ErrType, "unknown kid": ErrKey}[name]
		if _, err := Verify(forged, s.JWKS(), at(testNow)); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	for _, junk := range []string{"", "a.b", "a.b.c", parts[0] + ".." + parts[2], raw + ".x"} {
		if _, err := Verify(junk, s.JWKS(), at(testNow)); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
			t.Errorf("%q: %v", junk, err)
		}
	}
}

func TestTimeAndExpectations(t *testing.T) {
	s := newSigner(t)
	raw, _ := s.Sign(sampleClaims())
	cases := []struct {
		name string
		opts VerifyOptions
		want error
	}{
		{"fresh", at(testNow.Add(MaxLifetime - time.Minute)), nil},
		{"expired", at(testNow.Add(MaxLifetime + time.Minute)), ErrExpired},
		{"issued in the future", at(testNow.Add(-time.Hour)), ErrNotYet},
		{"issuer", VerifyOptions{Issuer: "http://other", Now: at(testNow).Now}, ErrIssuer},
		{"audience", VerifyOptions{Audience: "other", Now: at(testNow).Now}, ErrAudience},
	}
	for _, tc := range cases {
		_, err := Verify(raw, s.JWKS(), tc.opts)
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A token valid for longer than MaxLifetime is refused even when signed
	// by the right key.
	long := sampleClaims()
	long.Issuer, long.IssuedAt, long.Expiry = s.Issuer(), testNow.Unix(), testNow.Add(time.Hour).Unix()
	if _, err := Verify(signRaw(t, s, long), s.JWKS(), at(testNow)); !errors.Is(err, ErrLifetime) {
		t.Errorf("hour-long token: %v", err)
	}
}

// signRaw signs claims as given, bypassing Signer's own settings.
func signRaw(t *testing.T, s *Signer, c any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := obj.CompactSerialize()
	return raw
}

func TestIncompleteOrAmbiguousClaimsAreRefused(t *testing.T) {
	s := newSigner(t)
	for name, edit := range map[string]func(*Claims){
		"no approvers":     func(c *Claims) { c.Approvers = nil },
		"bad digest":       func(c *Claims) { c.Digest = "abc" },
		"upper-case hex":   func(c *Claims) { c.Digest = strings.ToUpper(c.Digest) },
		"details object":   func(c *Claims) { c.AuthorizationDetails = json.RawMessage(`{}`) },
		"repeated id":      func(c *Claims) { c.Approvers = append(c.Approvers, c.Approvers[0]) },
		"bad time":         func(c *Claims) { c.Approvers[0].At = "yesterday" },
		"no auth_req_id":   func(c *Claims) { c.AuthReqID = "" },
		"no audience":      func(c *Claims) { c.Audience = "" },
		"bad assertion id": func(c *Claims) { c.Approvers[0].AssertionSHA256 = "zz" },
	} {
		c := sampleClaims()
		edit(&c)
		if _, err := s.Sign(c); !errors.Is(err, ErrClaims) {
			t.Errorf("Sign with %s: %v", name, err)
		}
		c.Issuer, c.IssuedAt, c.Expiry = s.Issuer(), testNow.Unix(), testNow.Add(time.Minute).Unix()
		if _, err := Verify(signRaw(t, s, c), s.JWKS(), at(testNow)); !errors.Is(err, ErrClaims) {
			t.Errorf("Verify with %s: %v", name, err)
		}
	}
	// A repeated member or an unknown claim makes the payload ambiguous.
	good := sampleClaims()
	good.Issuer, good.IssuedAt, good.Expiry = s.Issuer(), testNow.Unix(), testNow.Add(time.Minute).Unix()
	b, _ := json.Marshal(good)
	dup := append([]byte(`{"tool":"transfer",`), b[1:]...)
	extra := append([]byte(`{"admin":true,`), b[1:]...)
	for name, payload := range map[string][]byte{"repeated member": dup, "unknown claim": extra} {
		obj, _ := s.signer.Sign(payload)
		raw, _ := obj.CompactSerialize()
		if _, err := Verify(raw, s.JWKS(), at(testNow)); !errors.Is(err, ErrClaims) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestParseKeySet(t *testing.T) {
	s := newSigner(t)
	pub, _ := json.Marshal(s.JWKS())
	set, err := ParseKeySet(pub)
	if err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != s.KeyID() {
		t.Fatalf("public set: %v %+v", err, set)
	}
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: s.priv, KeyID: "k"}}})
	if _, err := ParseKeySet(priv); err == nil || !strings.Contains(err.Error(), "private") {
		t.Errorf("private key in the set: %v", err)
	}
	for _, junk := range []string{``, `{}`, `{"keys":[]}`, `[1]`} {
		if _, err := ParseKeySet([]byte(junk)); err == nil {
			t.Errorf("%q accepted", junk)
		}
	}
}

func FuzzVerify(f *testing.F) {
	_, server, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := DeriveKey(server)
	s, _ := NewSigner(key, "http://x", SignerOptions{Now: func() time.Time { return testNow }})
	raw, _ := s.Sign(sampleClaims())
	f.Add(raw)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Verify(in, s.JWKS(), at(testNow))
		if err == nil && (c == nil || len(c.Approvers) == 0) {
			t.Fatalf("accepted without approvers: %q", in)
		}
		if err == nil && in != raw && strings.TrimSpace(in) != raw {
			// Anything else that verifies must carry the same payload.
			if got, _ := json.Marshal(c); !bytes.Contains(got, []byte(sampleClaims().Digest)) {
				t.Fatalf("forged token accepted: %q", in)
			}
		}
	})
}

func TestCriticalHeaderIsRefused(t *testing.T) {
	s := newSigner(t)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: s.priv},
		(&jose.SignerOptions{}).WithType(Type).WithHeader("kid", s.KeyID()).WithHeader("exp-policy", "x").WithCritical("exp-policy"))
	if err != nil {
		t.Fatal(err)
	}
	c := sampleClaims()
	c.Issuer, c.IssuedAt, c.Expiry = s.Issuer(), testNow.Unix(), testNow.Add(time.Minute).Unix()
	payload, _ := json.Marshal(c)
	obj, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := obj.CompactSerialize()
	if _, err := Verify(raw, s.JWKS(), at(testNow)); err == nil {
		t.Error("a token with a critical header extension verified")
	}
}
