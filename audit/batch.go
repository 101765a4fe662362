package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"

	"filippo.io/edwards25519"
)

// batchVerifier checks many Ed25519 signatures by one key at once, about
// three times faster than one by one: with fresh random 128-bit z_i it
// checks the cofactored equation
//
//	[8]( [Σ z_i·k_i]A + Σ [z_i]R_i − [Σ z_i·s_i]B ) = 0,   k_i = SHA-512(R_i || A || M_i)
//
// which holds for valid signatures and fails, except with probability
// about 2⁻¹²⁸, if any is invalid. Because the key is the same for every
// signature its term collapses into one point. A failed batch says only
// that some signature is bad; the caller then checks each with
// crypto/ed25519 to name the first.
type batchVerifier struct {
	pub ed25519.PublicKey
	a   *edwards25519.Point
}

func newBatchVerifier(pub ed25519.PublicKey) (*batchVerifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("bad public key length")
	}
	a, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, err
	}
	return &batchVerifier{pub: pub, a: a}, nil
}

// verify reports whether every sigs[i] is a valid signature of msgs[i].
func (b *batchVerifier) verify(msgs, sigs [][]byte) bool {
	n := len(sigs)
	if n == 0 {
		return true
	}
	random := make([]byte, 16*n)
	if _, err := rand.Read(random); err != nil {
		return false
	}
	scalars := make([]*edwards25519.Scalar, 0, n+2)
	points := make([]*edwards25519.Point, 0, n+2)
	sumZS, sumZK := edwards25519.NewScalar(), edwards25519.NewScalar()
	var zBytes [32]byte
	var digest [64]byte
	h := sha512.New()
	for i, sig := range sigs {
		if len(sig) != ed25519.SignatureSize {
			return false
		}
		r, err := new(edwards25519.Point).SetBytes(sig[:32])
		if err != nil {
			return false
		}
		s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
		if err != nil {
			return false
		}
		h.Reset()
		h.Write(sig[:32])
		h.Write(b.pub)
		h.Write(msgs[i])
		k, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))
		if err != nil {
			return false
		}
		copy(zBytes[:16], random[16*i:16*i+16]) // zBytes[16:] stay zero: z < 2¹²⁸ < ℓ
		z, err := edwards25519.NewScalar().SetCanonicalBytes(zBytes[:])
		if err != nil {
			return false
		}
		sumZS.MultiplyAdd(z, s, sumZS)
		sumZK.MultiplyAdd(z, k, sumZK)
		scalars = append(scalars, z)
		points = append(points, r)
	}
	scalars = append(scalars, sumZK, edwards25519.NewScalar().Negate(sumZS))
	points = append(points, b.a, edwards25519.NewGeneratorPoint())
	check := new(edwards25519.Point).VarTimeMultiScalarMult(scalars, points)
	check.MultByCofactor(check)
	return check.Equal(edwards25519.NewIdentityPoint()) == 1
}
