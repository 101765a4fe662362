// Package pkcs11key is an audit.Signer whose Ed25519 key stays in a
// PKCS #11 token (an HSM, SoftHSM): the server asks the token to sign and
// never holds the private key.
package pkcs11key

import (
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/miekg/pkcs11"
)

// PKCS #11 v3.0 names miekg/pkcs11 does not define.
const (
	ckmEdDSA             = 0x1057
	ckmEdwardsKeyPairGen = 0x1055
)

// ed25519Params is CKA_EC_PARAMS for Ed25519: the DER of OID 1.3.101.112.
var ed25519Params = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

// Key is a private key in a token, found by its label.
type Key struct {
	mu   sync.Mutex // one operation at a time on the session
	ctx  *pkcs11.Ctx
	sh   pkcs11.SessionHandle
	priv pkcs11.ObjectHandle
	pub  ed25519.PublicKey
}

// Open loads module (the token's PKCS #11 library), logs in to the token
// labelled token with pin, and finds the Ed25519 key pair labelled label.
func Open(module, token, pin, label string) (*Key, error) {
	k, err := session(module, token, pin)
	if err != nil {
		return nil, err
	}
	privs, err := k.find(pkcs11.CKO_PRIVATE_KEY, label)
	if err == nil && len(privs) != 1 {
		err = fmt.Errorf("%d private keys labelled %q, want 1", len(privs), label)
	}
	var pubs []pkcs11.ObjectHandle
	if err == nil {
		pubs, err = k.find(pkcs11.CKO_PUBLIC_KEY, label)
		if err == nil && len(pubs) != 1 {
			err = fmt.Errorf("%d public keys labelled %q, want 1", len(pubs), label)
		}
	}
	if err == nil {
		k.priv = privs[0]
		k.pub, err = k.point(pubs[0])
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("pkcs11: %w", err)
	}
	return k, nil
}

// Generate makes an Ed25519 key pair labelled label in the token, the
// private half not extractable, and returns it opened.
func Generate(module, token, pin, label string) (*Key, error) {
	k, err := session(module, token, pin)
	if err != nil {
		return nil, err
	}
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, ed25519Params), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	pub, priv, err := k.ctx.GenerateKeyPair(k.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdwardsKeyPairGen, nil)}, pubT, privT)
	if err == nil {
		k.priv = priv
		k.pub, err = k.point(pub)
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("pkcs11: generate: %w", err)
	}
	return k, nil
}

func session(module, token, pin string) (*Key, error) {
	ctx := pkcs11.New(module)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s", module)
	}
	k := &Key{ctx: ctx}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: initialize: %w", err)
	}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("pkcs11: slots: %w", err)
	}
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		if err != nil || info.Label != token {
			continue
		}
		if k.sh, err = ctx.OpenSession(s, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION); err != nil {
			k.Close()
			return nil, fmt.Errorf("pkcs11: open session: %w", err)
		}
		if err := ctx.Login(k.sh, pkcs11.CKU_USER, pin); err != nil {
			k.Close()
			return nil, fmt.Errorf("pkcs11: login: %w", err)
		}
		return k, nil
	}
	k.Close()
	return nil, fmt.Errorf("pkcs11: no token labelled %q", token)
}

func (k *Key) find(class uint, label string) ([]pkcs11.ObjectHandle, error) {
	t := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}
	if err := k.ctx.FindObjectsInit(k.sh, t); err != nil {
		return nil, err
	}
	objs, _, err := k.ctx.FindObjects(k.sh, 4)
	if ferr := k.ctx.FindObjectsFinal(k.sh); err == nil {
		err = ferr
	}
	return objs, err
}

// point reads the public key: CKA_EC_POINT, the 32 bytes or their DER
// OCTET STRING (tokens differ).
func (k *Key) point(o pkcs11.ObjectHandle) (ed25519.PublicKey, error) {
	attrs, err := k.ctx.GetAttributeValue(k.sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, err
	}
	raw := attrs[0].Value
	if len(raw) != ed25519.PublicKeySize {
		var inner []byte
		if rest, err := asn1.Unmarshal(raw, &inner); err != nil || len(rest) != 0 {
			return nil, errors.New("CKA_EC_POINT is not an Ed25519 point")
		}
		raw = inner
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("CKA_EC_POINT is not an Ed25519 point")
	}
	return ed25519.PublicKey(raw), nil
}

// Public is the key's Ed25519 public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign signs msg itself (Ed25519, opts.HashFunc() 0) in the token.
func (k *Key) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 {
		return nil, errors.New("pkcs11: Ed25519 signs the message, not a hash of it")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.ctx.SignInit(k.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, k.priv); err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	sig, err := k.ctx.Sign(k.sh, msg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	return sig, nil
}

// Close logs out and unloads the module.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sh != 0 {
		k.ctx.Logout(k.sh)
		k.ctx.CloseSession(k.sh)
	}
	k.ctx.Finalize()
	k.ctx.Destroy()
	return nil
}
