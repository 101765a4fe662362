package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// softKey is a software security key: a P-256 (ES256) or Ed25519 (EdDSA)
// credential that signs WebAuthn assertions the way an authenticator does.
type softKey struct {
	t        *testing.T
	priv     *ecdsa.PrivateKey
	ed       ed25519.PrivateKey // instead of priv: deterministic signatures
	id       string
	approver string
	counter  uint32
}

func newSoftKey(t *testing.T) *softKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &softKey{t: t, priv: priv, id: base64.RawURLEncoding.EncodeToString(id), approver: "alice"}
}

// newEdKey is an Ed25519 credential of approver derived from seed, so
// everything it signs is reproducible.
func newEdKey(t *testing.T, approver string, seed byte) *softKey {
	id := sha256.Sum256([]byte{seed})
	return &softKey{t: t, ed: seededKey(seed), id: base64.RawURLEncoding.EncodeToString(id[:16]), approver: approver}
}

// cose is the credential's public key as a COSE_Key, base64url.
func (k *softKey) cose() string {
	var b []byte
	var err error
	if k.ed != nil {
		b, err = webauthncbor.Marshal(webauthncose.OKPPublicKeyData{
			PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.OctetKey), Algorithm: int64(webauthncose.AlgEdDSA)},
			Curve:         int64(webauthncose.Ed25519),
			XCoord:        k.ed.Public().(ed25519.PublicKey),
		})
	} else {
		pub, perr := k.priv.PublicKey.ECDH()
		if perr != nil {
			k.t.Fatal(perr)
		}
		raw := pub.Bytes() // 0x04 || X || Y
		b, err = webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
			PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
			Curve:         int64(webauthncose.P256),
			XCoord:        raw[1:33],
			YCoord:        raw[33:],
		})
	}
	if err != nil {
		k.t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign fills e's assertion fields for the digest of e as it stands.
func (k *softKey) sign(e *audit.Entry, origin, rpID string, flags byte) {
	k.signChallenge(e, actionDigest(k.t, e), origin, rpID, flags)
}

// actionDigest is the action digest of e as it stands.
func actionDigest(t *testing.T, e *audit.Entry) [32]byte {
	t.Helper()
	args, _ := hex.DecodeString(e.ArgsSHA256)
	nonce, _ := base64.RawURLEncoding.DecodeString(e.Nonce)
	exp, err := time.Parse(time.RFC3339, e.ExpiresAt)
	if err != nil {
		t.Fatal(err)
	}
	a := digest.Action{RequestID: e.RequestID, Decision: vocab.Decision(e.Decision), AuthorizationDetails: e.AuthorizationDetails,
		Tool: e.Tool, Display: e.Display, Nonce: nonce, ExpiresAt: exp}
	copy(a.ArgsSHA256[:], args)
	d, err := digest.Compute(a)
	if err != nil {
		t.Fatal(err)
	}
	if e.GrantID != "" {
		// Approving with a grant: the key signs the grant digest.
		if d, err = grantChallenge(e, d); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// signChallenge fills e's assertion fields for an assertion over d.
func (k *softKey) signChallenge(e *audit.Entry, d [32]byte, origin, rpID string, flags byte) {
	t := k.t
	var err error
	cdj, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": base64.RawURLEncoding.EncodeToString(d[:]), "origin": origin, "crossOrigin": false})
	rp := sha256.Sum256([]byte(rpID))
	k.counter++
	ad := append(rp[:], flags, byte(k.counter>>24), byte(k.counter>>16), byte(k.counter>>8), byte(k.counter))
	cdHash := sha256.Sum256(cdj)
	signed := append(append([]byte{}, ad...), cdHash[:]...)
	var sig []byte
	if k.ed != nil {
		sig = ed25519.Sign(k.ed, signed)
	} else {
		msg := sha256.Sum256(signed)
		if sig, err = ecdsa.SignASN1(rand.Reader, k.priv, msg[:]); err != nil {
			t.Fatal(err)
		}
	}
	e.Approver, e.CredentialID, e.Origin, e.RPID = k.approver, k.id, origin, rpID
	e.UserVerified = flags&flagUserVerified != 0
	e.AuthenticatorData = base64.RawURLEncoding.EncodeToString(ad)
	e.ClientDataJSON = base64.RawURLEncoding.EncodeToString(cdj)
	e.Signature = base64.RawURLEncoding.EncodeToString(sig)
}

// requestFields are the digest inputs of a request, as every entry about
// it carries them.
func requestFields(id string) audit.Entry {
	args := json.RawMessage(`{"to":"Vendor X","amount":500000,"currency":"USD"}`)
	sum, _ := digest.ArgsSHA256(args)
	return audit.Entry{
		Agent: "agent-1", Tool: "transfer", Args: args, ArgsSHA256: hex.EncodeToString(sum[:]), RequestID: id,
		AuthorizationDetails: json.RawMessage(`[{"type":"payment_initiation","actions":["transfer"],"instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X"}]`),
		Display:              "Approve $500,000.00 transfer to Vendor X", Nonce: base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)),
		ExpiresAt: "2026-03-01T09:35:00Z",
	}
}

// requested is the approval.requested entry of request id.
func requested(id string, level vocab.Level, quorum int, uv vocab.UserVerification, eligible ...string) audit.Entry {
	e := requestFields(id)
	e.Kind, e.Level, e.Rule, e.Quorum, e.Eligible, e.UserVerification = vocab.KindApprovalRequested, level, "tools.transfer.rules[0]", quorum, eligible, uv
	return e
}

// decided is a key decision on request id, signed by k.
func decided(k *softKey, id string, decision vocab.Decision, flags byte) audit.Entry {
	e := requestFields(id)
	e.Kind, e.Decision, e.DecidedAt = vocab.KindApprovalAssertion, string(decision), "2026-03-01T09:31:00.000000000Z"
	if decision == vocab.Deny {
		e.Kind = vocab.KindApprovalDenied
	}
	k.sign(&e, origin, rpID, flags)
	return e
}

const origin, rpID = "http://localhost:8710", "localhost"

// assertionLog builds: 1 enrolled, 2 requested, 3 assertion (approve,
// UV), 4 approved, 5 requested, 6 denied with the key.
func assertionLog(t *testing.T, k *softKey) []byte {
	db := storetest.Open(t, t.TempDir())
	l := openLog(t, db, seededKey(1), audit.Options{Now: stepClock()})
	mustAppend(t, l, audit.Entry{Kind: vocab.KindApproverEnrolled, Approver: "alice", CredentialID: k.id, PublicKey: k.cose(), Origin: origin, RPID: rpID})
	mustAppend(t, l, requested("req-1", "high", 1, vocab.UVPreferred, "alice"))
	mustAppend(t, l, decided(k, "req-1", vocab.Approve, flagUserPresent|flagUserVerified))
	done := requestFields("req-1")
	done.Kind, done.Decision, done.Approvers, done.Assertions = vocab.KindApprovalApproved, string(vocab.Approve), []string{"alice"}, []int64{3}
	mustAppend(t, l, done)

	req2 := requested("req-2", "high", 1, vocab.UVPreferred, "alice")
	req2.ArgsRedact = true
	mustAppend(t, l, req2)
	den := decided(k, "req-2", vocab.Deny, flagUserPresent)
	den.ArgsRedact = true
	mustAppend(t, l, den)
	return exportBytes(t, l, 0)
}

func TestVerifyAssertions(t *testing.T) {
	key := seededKey(1)
	pub := pubText(key)
	k := newSoftKey(t)
	export := assertionLog(t, k)
	s, err := Export(bytes.NewReader(export), pub, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Assertions != 2 {
		t.Fatalf("%d assertions checked, want 2", s.Assertions)
	}

	// Each forgery is re-signed with the server key, so only the
	// approver's signature can catch it.
	cases := []struct {
		name   string
		seq    int64
		mutate func(*audit.Entry)
		reason string
	}{
		{"approve turned into deny", 3, func(e *audit.Entry) { e.Kind, e.Decision = vocab.KindApprovalDenied, string(vocab.Deny) }, "challenge is not the action digest"},
		{"decision field flipped", 3, func(e *audit.Entry) { e.Decision = string(vocab.Deny) }, "does not match kind"},
		{"deny turned into approve", 6, func(e *audit.Entry) { e.Kind, e.Decision = vocab.KindApprovalAssertion, string(vocab.Approve) }, "challenge is not the action digest"},
		{"other origin", 3, func(e *audit.Entry) { e.Origin = "http://evil.example" }, "origin"},
		{"other rp id", 3, func(e *audit.Entry) { e.RPID = "evil.example" }, "rpIdHash"},
		{"other amount", 3, func(e *audit.Entry) {
			e.Args = json.RawMessage(`{"amount":900000,"currency":"USD","to":"Vendor X"}`)
			sum, _ := digest.ArgsSHA256(e.Args)
			e.ArgsSHA256 = hex.EncodeToString(sum[:])
		}, "challenge is not the action digest"},
		{"args not matching their digest", 3, func(e *audit.Entry) { e.Args = json.RawMessage(`{"amount":1}`) }, "args do not match"},
		{"other display", 6, func(e *audit.Entry) { e.Display = "Approve $5 transfer" }, "challenge"},
		{"signature byte flipped", 3, func(e *audit.Entry) {
			sig, _ := base64.RawURLEncoding.DecodeString(e.Signature)
			sig[len(sig)-1] ^= 1
			e.Signature = base64.RawURLEncoding.EncodeToString(sig)
		}, "signature does not verify"},
		{"claims UV it lacks", 6, func(e *audit.Entry) { e.UserVerified = true }, "UV flag"},
		{"unknown credential", 3, func(e *audit.Entry) { e.CredentialID = "AAAA" }, "was not enrolled"},
		{"other approver", 3, func(e *audit.Entry) { e.Approver = "mallory" }, "is not the owner"},
		{"assertion removed", 6, func(e *audit.Entry) { e.Signature = "" }, "carries no WebAuthn assertion"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forged := resign(t, export, key, func(e *audit.Entry) {
				if e.Seq == tc.seq {
					tc.mutate(e)
				}
			})
			wantVerifyErr(t, forged, pub, nil, tc.seq, tc.reason)
		})
	}

	t.Run("revoked before use", func(t *testing.T) {
		lines, cp := splitExport(t, export)
		revoke, _ := encodeLine(&audit.Entry{Seq: 2, V: audit.Format, Kind: vocab.KindCredentialRevoked, CredentialID: k.id, Approver: "alice"})
		withRevoke := append([][]byte{lines[0], revoke}, lines[1:]...)
		forged := resign(t, joinExport(withRevoke, cp), key, func(e *audit.Entry) {
			if e.Kind != vocab.KindCredentialRevoked && e.Seq >= 2 {
				e.Seq++
			}
		})
		wantVerifyErr(t, forged, pub, nil, 4, "was revoked at seq 2")
	})

	t.Run("enrolled key of a refused algorithm", func(t *testing.T) {
		for _, alg := range []webauthncose.COSEAlgorithmIdentifier{webauthncose.AlgRS1, webauthncose.AlgES256K, 0} {
			forged := resign(t, export, key, func(e *audit.Entry) {
				if e.Kind == vocab.KindApproverEnrolled {
					b, _ := webauthncbor.Marshal(webauthncose.RSAPublicKeyData{
						PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.RSAKey), Algorithm: int64(alg)},
						Modulus:       bytes.Repeat([]byte{0xc5}, 256), Exponent: []byte{1, 0, 1},
					})
					e.PublicKey = base64.RawURLEncoding.EncodeToString(b)
				}
			})
			wantVerifyErr(t, forged, pub, nil, 1, "not one of ES256, ES384, ES512, EdDSA")
		}
	})

	t.Run("enrolled key of someone else", func(t *testing.T) {
		other := newSoftKey(t)
		forged := resign(t, export, key, func(e *audit.Entry) {
			if e.Kind == vocab.KindApproverEnrolled {
				e.PublicKey = other.cose()
			}
		})
		wantVerifyErr(t, forged, pub, nil, 3, "signature does not verify with the key enrolled at seq 1")
	})
}
