package audit

import (
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// A Signer makes the server's signatures: entries' sig, checkpoints and,
// through it, everything signed in the log's name. It is crypto.Signer
// with an Ed25519 public key, signing the message itself
// (crypto.Hash(0)), so that a key the process never holds (a PKCS #11
// token, a cloud KMS) can sign where the file key ([LoadKey], an
// ed25519.PrivateKey) does today. Sign may fail (a token removed, a KMS
// unreachable); the append or checkpoint then fails and nothing is
// written.
type Signer = crypto.Signer

// signerPublic is s's public key, refusing a Signer whose key is not
// Ed25519: the export format names Ed25519 alone.
func signerPublic(s Signer) (ed25519.PublicKey, error) {
	if s == nil {
		return nil, errors.New("audit: no server key")
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: server key is %T, want an Ed25519 public key", s.Public())
	}
	return pub, nil
}

// signWith signs msg with s and checks the result against pub, so that a
// signer that answers with the wrong key or a broken signature fails the
// write instead of storing an entry nobody can verify.
func signWith(s Signer, pub ed25519.PublicKey, msg []byte) ([]byte, error) {
	if k, ok := s.(ed25519.PrivateKey); ok {
		// The file key signs in this process: no check needed, and
		// appends stay as fast as before.
		return ed25519.Sign(k, msg), nil
	}
	sig, err := s.Sign(nil, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("audit: sign: %w", err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return nil, errors.New("audit: sign: the signer's signature does not verify with its public key")
	}
	return sig, nil
}
