//go:build cgo

package pkcs11key

import (
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"encoding/binary"
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
	mu     sync.Mutex // one operation at a time on the session
	ctx    *pkcs11.Ctx
	module string
	sh     pkcs11.SessionHandle
	priv   pkcs11.ObjectHandle
	pub    ed25519.PublicKey
}

// Open loads module (the token's PKCS #11 library), logs in to the token
// labelled token with pin, and finds the Ed25519 key pair labelled label.
func Open(module, token, pin, label string) (*Key, error) {
	k, err := session(module, token, pin)
	if err != nil {
		return nil, err
	}
	privs, err := k.find(pkcs11.CKO_PRIVATE_KEY, label)
	switch {
	case err != nil:
	case len(privs) == 0:
		err = fmt.Errorf("%w: no private key labelled %q in token %q", ErrNoKey, label, token)
	case len(privs) > 1:
		err = fmt.Errorf("%d private keys labelled %q, want 1", len(privs), label)
	default:
		err = k.checkEd25519(privs[0], label)
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

// modules are the PKCS #11 modules this process has initialized, by path,
// with how many open keys use each: C_Initialize and C_Finalize act on
// the whole process, so a second key in the same module (a rotation from
// one token key to another, a derivation beside the log's key) shares the
// first one's initialization, and the last Close finalizes.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

type module struct {
	ctx  *pkcs11.Ctx
	refs int
}

func acquire(path string) (*pkcs11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m.ctx, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s", path)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: initialize %s: %w", path, err)
	}
	modules.m[path] = &module{ctx: ctx, refs: 1}
	return ctx, nil
}

func release(path string) {
	modules.Lock()
	defer modules.Unlock()
	m := modules.m[path]
	if m == nil {
		return
	}
	if m.refs--; m.refs == 0 {
		m.ctx.Finalize() // logs out every session of the module
		m.ctx.Destroy()
		delete(modules.m, path)
	}
}

func session(path, token, pin string) (*Key, error) {
	ctx, err := acquire(path)
	if err != nil {
		return nil, err
	}
	k := &Key{ctx: ctx, module: path}
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
		// Login is per token and application: a second key of the same
		// token finds it logged in already.
		if err := ctx.Login(k.sh, pkcs11.CKU_USER, pin); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			k.Close()
			return nil, fmt.Errorf("pkcs11: login to token %q: %w", token, err)
		}
		return k, nil
	}
	k.Close()
	return nil, fmt.Errorf("%w labelled %q in %s", ErrNoToken, token, path)
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

// ckkECEdwards is CKK_EC_EDWARDS (PKCS #11 v3.0), Ed25519's key type.
const ckkECEdwards = 0x40

// checkEd25519 refuses a key of another type (RSA, ECDSA): the log's
// format names Ed25519 alone.
func (k *Key) checkEd25519(o pkcs11.ObjectHandle, label string) error {
	attrs, err := k.ctx.GetAttributeValue(k.sh, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return err
	}
	var t uint64 // a CK_ULONG, in the machine's order
	switch v := attrs[0].Value; len(v) {
	case 8:
		t = binary.NativeEndian.Uint64(v)
	case 4:
		t = uint64(binary.NativeEndian.Uint32(v))
	}
	if t != ckkECEdwards {
		return fmt.Errorf("key %q is not an Ed25519 key (CKA_KEY_TYPE 0x%x, want CKK_EC_EDWARDS 0x%x)", label, t, ckkECEdwards)
	}
	return nil
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
	if k.ctx == nil {
		return nil, errors.New("pkcs11: sign: the key is closed")
	}
	if err := k.ctx.SignInit(k.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, k.priv); err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	sig, err := k.ctx.Sign(k.sh, msg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	return sig, nil
}

// Close closes the key's session, and finalizes the module once no other
// key of this process uses it. Logging out would log out every session of
// the token, so Close leaves that to the last one's C_Finalize.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ctx == nil {
		return nil
	}
	if k.sh != 0 {
		k.ctx.CloseSession(k.sh)
	}
	release(k.module)
	k.ctx = nil
	return nil
}
