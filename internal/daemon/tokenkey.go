package daemon

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pkcs11key"
	"github.com/countersign/countersign/config"
)

// ServerSigner opens the server key as a signer: the key in the PKCS #11
// token audit.pkcs11 names, else the file key ([ServerKey]). release
// ends the token's session (a no-op for the file key).
func ServerSigner(c *config.Config) (key audit.Signer, release func(), err error) {
	if !c.Audit.PKCS11.Enabled() {
		k, err := ServerKey(c)
		if err != nil {
			return nil, nil, err
		}
		return k, func() {}, nil
	}
	k, err := openTokenKey(c.Audit.PKCS11)
	if err != nil {
		return nil, nil, err
	}
	return k, func() { k.Close() }, nil
}

// heldSigners are the releases of the server keys OpenAudit opened, by
// their log.
var heldSigners sync.Map // *audit.Log → func()

// releaseSigner ends the session of l's server key, once l is closed.
func releaseSigner(l *audit.Log) {
	if f, ok := heldSigners.LoadAndDelete(l); ok {
		f.(func())()
	}
}

// openTokenKey opens the key p names with the PIN from p.PINEnv.
func openTokenKey(p config.AuditPKCS11) (*pkcs11key.Key, error) {
	pin, ok := p.PIN()
	if !ok || pin == "" {
		return nil, fmt.Errorf("audit.pkcs11: the token's PIN is read from $%s (audit.pkcs11.pin_env), which is not set", p.PINEnv)
	}
	k, err := pkcs11key.Open(p.Module, p.Token, pin, p.Key)
	if err != nil {
		return nil, fmt.Errorf("audit.pkcs11 (module %s, token %q, key %q): %w", p.Module, p.Token, p.Key, err)
	}
	return k, nil
}

// derivationLabel is what the token signs to derive the secrets the file
// key's seed gives a file-keyed server (the approval token key, the
// sealed results' key). It is never a message the log signs: entries are
// signed as 32-byte hashes, checkpoints and rotations as text without NUL.
const derivationLabel = "countersign/pkcs11-derivation/v1\x00"

// derivationKey is the key the approval token key (token.DeriveKey) and
// the sealed results' key (sealed.DeriveKey) derive from: the file key
// itself, as always, or for a key in a token a stand-in derived from the
// token's signature over derivationLabel and its public key.
//
// A token never lets the private key out, so nothing can be derived from
// it; but Ed25519 signatures are deterministic (RFC 8032), so the token's
// signature over a fixed, domain-separated message is a secret only the
// token can make, the same on every start and on every replica that
// reaches the same key. A token that signs otherwise (two signatures
// differ) is refused rather than yield keys that change on restart. A
// separate file key would have worked too, but would be one more secret
// to copy to every replica and to rotate with the token's.
func derivationKey(c *config.Config) (ed25519.PrivateKey, error) {
	s, release, err := ServerSigner(c)
	if err != nil {
		return nil, err
	}
	defer release()
	return derivationRoot(s)
}

func derivationRoot(s audit.Signer) (ed25519.PrivateKey, error) {
	if k, ok := s.(ed25519.PrivateKey); ok {
		return k, nil
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("server key is %T, want Ed25519", s.Public())
	}
	msg := append([]byte(derivationLabel), pub...)
	var sigs [2][]byte
	for i := range sigs {
		sig, err := s.Sign(nil, msg, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("deriving the token and result keys from the server key: %w", err)
		}
		sigs[i] = sig
	}
	if !ed25519.Verify(pub, msg, sigs[0]) {
		return nil, errors.New("deriving the token and result keys: the server key's signature does not verify with its public key")
	}
	if !bytes.Equal(sigs[0], sigs[1]) {
		return nil, errors.New("deriving the token and result keys: the token's Ed25519 signatures of one message differ, " +
			"so keys derived from them would change on every start; use a token that signs per RFC 8032 or the file key")
	}
	seed, err := hkdf.Key(sha256.New, sigs[0], nil, derivationLabel, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// CheckTokenKey opens the token key audit.pkcs11 names, as serve would,
// and derives from it: config validate's check that the module loads, the
// token is there, the PIN opens it and the key is an Ed25519 key that
// signs deterministically. Without audit.pkcs11 there is nothing to check.
func CheckTokenKey(c *config.Config) error {
	if !c.Audit.PKCS11.Enabled() {
		return nil
	}
	_, err := derivationKey(c)
	return err
}
