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

	"github.com/fxamacker/cbor/v2"
)

// SoftKey is a security key in software: an ECDSA P-256 credential that
// builds authenticatorData and clientDataJSON and signs them as a CTAP2
// authenticator would, for tests that approve without a browser (through
// the service in Go, or the page's JSON endpoints). Its fields are open so
// that a test can make it misbehave on purpose: claim another key's ID,
// sign for another origin or RP ID, turn its counter back, drop UV.
type SoftKey struct {
	Priv    *ecdsa.PrivateKey
	ID      []byte // credential id
	Counter uint32 // incremented before each assertion
	RPID    string
	Origin  string
	UV      bool   // report user verification (PIN or biometric)
	Handle  []byte // user handle learned at registration, sent with assertions
}

// NewSoftKey returns a key for rpID that signs as if on a page at origin,
// reporting user verification.
func NewSoftKey(rpID, origin string) (*SoftKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &SoftKey{Priv: priv, ID: id, RPID: rpID, Origin: origin, UV: true}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ClientData is the clientDataJSON of a ceremony of type typ
// ("webauthn.create" or "webauthn.get").
func (k *SoftKey) ClientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": k.Origin, "crossOrigin": false})
	return b
}

// AuthData is authenticatorData with UP (and UV, AT as asked) and the
// current counter, followed by extra.
func (k *SoftKey) AuthData(extra []byte, attested bool) []byte {
	rp := sha256.Sum256([]byte(k.RPID))
	flags := byte(0x01) // UP
	if k.UV {
		flags |= 0x04
	}
	if attested {
		flags |= 0x40
	}
	out := append(rp[:], flags)
	out = binary.BigEndian.AppendUint32(out, k.Counter)
	return append(out, extra...)
}

// COSEKey is the credential's public key as a COSE_Key.
func (k *SoftKey) COSEKey() []byte {
	x := k.Priv.PublicKey.X.FillBytes(make([]byte, 32))
	y := k.Priv.PublicKey.Y.FillBytes(make([]byte, 32))
	em, _ := cbor.CTAP2EncOptions().EncMode()
	b, err := em.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		panic(err) // a fixed map of ints and byte strings always encodes
	}
	return b
}

// Create answers navigator.credentials.create() options (the publicKey
// member, as JSON) with a "none" attestation, and remembers the user
// handle.
func (k *SoftKey) Create(publicKey json.RawMessage) ([]byte, error) {
	var opts struct {
		Challenge string `json:"challenge"`
		User      struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(publicKey, &opts); err != nil {
		return nil, fmt.Errorf("soft key: creation options: %w", err)
	}
	k.Handle, _ = base64.RawURLEncoding.DecodeString(opts.User.ID)
	cd := k.ClientData("webauthn.create", opts.Challenge)
	attested := make([]byte, 16) // zero AAGUID
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(k.ID)))
	attested = append(attested, k.ID...)
	attested = append(attested, k.COSEKey()...)
	em, _ := cbor.CTAP2EncOptions().EncMode()
	att, err := em.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": k.AuthData(attested, true)})
	if err != nil {
		return nil, fmt.Errorf("soft key: attestation: %w", err)
	}
	return json.Marshal(map[string]any{
		"id": b64(k.ID), "rawId": b64(k.ID), "type": "public-key",
		"response":               map[string]any{"clientDataJSON": b64(cd), "attestationObject": b64(att), "transports": []string{"usb"}},
		"clientExtensionResults": map[string]any{},
	})
}

// Get answers navigator.credentials.get() for challenge (base64url).
func (k *SoftKey) Get(challenge string) []byte {
	k.Counter++
	return k.Sign(k.ClientData("webauthn.get", challenge), k.AuthData(nil, false))
}

// Sign makes an assertion response over clientData and authData.
func (k *SoftKey) Sign(clientData, authData []byte) []byte {
	h := sha256.Sum256(clientData)
	msg := sha256.Sum256(append(append([]byte{}, authData...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.Priv, msg[:])
	if err != nil {
		panic(err) // crypto/rand failing is not a test outcome
	}
	resp := map[string]any{"clientDataJSON": b64(clientData), "authenticatorData": b64(authData), "signature": b64(sig)}
	if k.Handle != nil {
		resp["userHandle"] = b64(k.Handle)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64(k.ID), "rawId": b64(k.ID), "type": "public-key",
		"response": resp, "clientExtensionResults": map[string]any{},
	})
	return b
}
