package approvaltest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// SoftKey is a security key in software, for tests that approve without a
// browser: an ECDSA P-256 credential that answers the page's
// navigator.credentials.create() and .get() options as a CTAP2
// authenticator would, signing real authenticatorData and clientDataJSON.
// It speaks the JSON the approver page exchanges (options in,
// PublicKeyCredential.toJSON() out), so it needs nothing of package
// approval.
type SoftKey struct {
	RPID   string
	Origin string
	UV     bool // report user verification (PIN or biometric)

	// Counter is the signature counter: Get raises it by one before it
	// signs. Tests set it to play a clone that lags or a forger ahead.
	Counter uint32
	// UserHandle is what assertions return as userHandle: the user.id of
	// the creation options Create answered. Tests copy another key's to
	// claim that approver.
	UserHandle []byte

	priv *ecdsa.PrivateKey
	id   []byte

	attKey  *ecdsa.PrivateKey // set by Maker.Attest: enrollments attest ("packed")
	attCert []byte
}

// NewSoftKey returns a key for one RP ID and origin that reports user
// verification.
func NewSoftKey(t testing.TB, rpID, origin string) *SoftKey {
	t.Helper()
	k, err := NewKey(rpID, origin)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewKey is NewSoftKey for programs that are not tests (bench/crashload).
func NewKey(rpID, origin string) (*SoftKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &SoftKey{RPID: rpID, Origin: origin, UV: true, priv: priv, id: id}, nil
}

// ID is the credential id.
func (k *SoftKey) ID() []byte { return k.id }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (k *SoftKey) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": k.Origin, "crossOrigin": false})
	return b
}

func (k *SoftKey) authData(attested []byte) []byte {
	rp := sha256.Sum256([]byte(k.RPID))
	flags := byte(0x01) // UP
	if k.UV {
		flags |= 0x04
	}
	if attested != nil {
		flags |= 0x40
	}
	out := append(rp[:], flags)
	out = binary.BigEndian.AppendUint32(out, k.Counter)
	return append(out, attested...)
}

func (k *SoftKey) coseKey() []byte {
	x := k.priv.PublicKey.X.FillBytes(make([]byte, 32))
	y := k.priv.PublicKey.Y.FillBytes(make([]byte, 32))
	em, _ := cbor.CTAP2EncOptions().EncMode()
	b, err := em.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		panic(err)
	}
	return b
}

// Create answers navigator.credentials.create() options (the publicKey
// member, as JSON) with a "none" attestation.
func (k *SoftKey) Create(t testing.TB, publicKey json.RawMessage) []byte {
	t.Helper()
	b, err := k.Register(publicKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Register is Create for programs that are not tests.
func (k *SoftKey) Register(publicKey json.RawMessage) ([]byte, error) {
	var opts struct {
		Challenge string `json:"challenge"`
		User      struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(publicKey, &opts); err != nil {
		return nil, fmt.Errorf("soft key: creation options: %w", err)
	}
	k.UserHandle, _ = base64.RawURLEncoding.DecodeString(opts.User.ID)
	cd := k.clientData("webauthn.create", opts.Challenge)
	attested := make([]byte, 16) // zero AAGUID
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(k.id)))
	attested = append(attested, k.id...)
	attested = append(attested, k.coseKey()...)
	em, _ := cbor.CTAP2EncOptions().EncMode()
	ad := k.authData(attested)
	format, stmt := "none", map[string]any{}
	if k.attKey != nil {
		h := sha256.Sum256(cd)
		digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
		sig, err := ecdsa.SignASN1(rand.Reader, k.attKey, digest[:])
		if err != nil {
			return nil, fmt.Errorf("soft key: attestation signature: %w", err)
		}
		format, stmt = "packed", map[string]any{"alg": -7, "sig": sig, "x5c": []any{k.attCert}}
	}
	att, err := em.Marshal(map[string]any{"fmt": format, "attStmt": stmt, "authData": ad})
	if err != nil {
		return nil, fmt.Errorf("soft key: attestation: %w", err)
	}
	return json.Marshal(map[string]any{
		"id": b64(k.id), "rawId": b64(k.id), "type": "public-key",
		"response":               map[string]any{"clientDataJSON": b64(cd), "attestationObject": b64(att), "transports": []string{"usb"}},
		"clientExtensionResults": map[string]any{},
	})
}

// Get answers navigator.credentials.get() for a challenge (base64url):
// one tap, so the sign counter goes up by one.
func (k *SoftKey) Get(challenge string) []byte {
	k.Counter++
	return k.assert(k.clientData("webauthn.get", challenge))
}

// assert signs clientDataJSON with authenticator data at the current
// counter, as an assertion response.
func (k *SoftKey) assert(cd []byte) []byte {
	ad := k.authData(nil)
	h := sha256.Sum256(cd)
	msg := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, msg[:])
	if err != nil {
		panic(err)
	}
	resp := map[string]any{"clientDataJSON": b64(cd), "authenticatorData": b64(ad), "signature": b64(sig)}
	if k.UserHandle != nil {
		resp["userHandle"] = b64(k.UserHandle)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64(k.id), "rawId": b64(k.id), "type": "public-key",
		"response": resp, "clientExtensionResults": map[string]any{},
	})
	return b
}
