package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"filippo.io/edwards25519"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/note"
)

// The signature rule: an entry's sig and the checkpoint's signature are
// valid exactly when crypto/ed25519.Verify accepts them. These vectors have
// small-order components, where a cofactored check (the batch verifier
// this package used to have) and crypto/ed25519 disagree; both paths must
// side with crypto/ed25519 on every one.

// torsion returns the eight points of small order, T·0 … T·7 for a point
// T of order 8. It derives them rather than listing constants: the small-
// order component of any point Q is [ℓ]Q, computed as [ℓ-1]Q + Q because
// a scalar holds only values below ℓ.
func torsion(t *testing.T) []*edwards25519.Point {
	t.Helper()
	minusOne := edwards25519.NewScalar().Negate(scalarOne())
	for i := 0; ; i++ {
		var enc [32]byte
		binary.LittleEndian.PutUint64(enc[:], uint64(i)+2)
		q, err := new(edwards25519.Point).SetBytes(enc[:])
		if err != nil {
			continue // not on the curve
		}
		tp := new(edwards25519.Point).ScalarMult(minusOne, q)
		tp.Add(tp, q)
		four := new(edwards25519.Point).Add(tp, tp)
		four.Add(four, four)
		if four.Equal(edwards25519.NewIdentityPoint()) == 1 {
			continue // order below 8
		}
		out := []*edwards25519.Point{edwards25519.NewIdentityPoint()}
		for i := 1; i < 8; i++ {
			out = append(out, new(edwards25519.Point).Add(out[i-1], tp))
		}
		if new(edwards25519.Point).Add(out[7], tp).Equal(out[0]) != 1 {
			t.Fatal("T·8 is not the identity")
		}
		return out
	}
}

func scalarOne() *edwards25519.Scalar {
	var b [32]byte
	b[0] = 1
	s, _ := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	return s
}

// challengeScalar is k = SHA-512(R || A || M) mod ℓ.
func challengeScalar(r, a, msg []byte) *edwards25519.Scalar {
	h := sha512.New()
	h.Write(r)
	h.Write(a)
	h.Write(msg)
	k, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	return k
}

// secretScalar is the clamped scalar a of an RFC 8032 key, A = [a]B.
func secretScalar(key ed25519.PrivateKey) *edwards25519.Scalar {
	h := sha512.Sum512(key.Seed())
	a, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic(err)
	}
	return a
}

// signWithR signs msg with key using the nonce point R = [r]B + extra and
// the given encoding of it (nil: the canonical one): s = r + k·a.
func signWithR(key ed25519.PrivateKey, msg []byte, extra *edwards25519.Point, rEnc []byte) []byte {
	var seed [64]byte
	rand.Read(seed[:])
	r, _ := edwards25519.NewScalar().SetUniformBytes(seed[:])
	R := new(edwards25519.Point).ScalarBaseMult(r)
	R.Add(R, extra)
	if rEnc == nil {
		rEnc = R.Bytes()
	}
	k := challengeScalar(rEnc, key.Public().(ed25519.PublicKey), msg)
	s := edwards25519.NewScalar().MultiplyAdd(k, secretScalar(key), r)
	return append(append([]byte{}, rEnc...), s.Bytes()...)
}

// cofactoredAccepts is the check the old batch path made, for one
// signature: [8]([s]B − [k]A − R) = 0, decoding points as leniently as
// edwards25519.SetBytes does.
func cofactoredAccepts(pub, msg, sig []byte) bool {
	A, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return false
	}
	R, err := new(edwards25519.Point).SetBytes(sig[:32])
	if err != nil {
		return false
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return false
	}
	k := challengeScalar(sig[:32], pub, msg)
	x := new(edwards25519.Point).ScalarBaseMult(s)
	x.Subtract(x, new(edwards25519.Point).ScalarMult(k, A))
	x.Subtract(x, R)
	x.MultByCofactor(x)
	return x.Equal(edwards25519.NewIdentityPoint()) == 1
}

// sigVector signs a message for one public key in some odd way.
type sigVector struct {
	name string
	pub  ed25519.PublicKey
	sign func(msg []byte) []byte
}

func sigVectors(t *testing.T) []sigVector {
	key := seededKey(1)
	pub := key.Public().(ed25519.PublicKey)
	T := torsion(t)
	identity := edwards25519.NewIdentityPoint()
	// y = 1 + p: a non-canonical encoding of the identity, which
	// SetBytes accepts and crypto/ed25519 never produces.
	nonCanonicalIdentity, _ := hex.DecodeString("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	if p, err := new(edwards25519.Point).SetBytes(nonCanonicalIdentity); err != nil || p.Equal(identity) != 1 {
		t.Fatalf("non-canonical identity: %v", err)
	}
	vs := []sigVector{
		{"valid", pub, func(m []byte) []byte { return ed25519.Sign(key, m) }},
		{"valid, own nonce", pub, func(m []byte) []byte { return signWithR(key, m, identity, nil) }},
		{"R with an order-8 component", pub, func(m []byte) []byte { return signWithR(key, m, T[1], nil) }},
		{"R with an order-2 component", pub, func(m []byte) []byte { return signWithR(key, m, T[4], nil) }},
		{"R non-canonically encoded", pub, func(m []byte) []byte {
			// r = 0, so R is the identity, written as y = 1 + p.
			k := challengeScalar(nonCanonicalIdentity, pub, m)
			s := edwards25519.NewScalar().Multiply(k, secretScalar(key))
			return append(append([]byte{}, nonCanonicalIdentity...), s.Bytes()...)
		}},
		{"s not reduced", pub, func(m []byte) []byte {
			sig := ed25519.Sign(key, m)
			// s + ℓ, little-endian; still below 2^253 for most s.
			l, _ := hex.DecodeString("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
			var carry uint16
			for i := range 32 {
				v := uint16(sig[32+i]) + uint16(l[i]) + carry
				sig[32+i], carry = byte(v), v>>8
			}
			return sig
		}},
	}
	// A public key of small order: [s]B = R + [k]A with s = 0 holds,
	// cofactorless, for at most one of the eight small-order R; the
	// cofactored equation holds for all eight.
	for _, order := range []struct {
		name string
		A    *edwards25519.Point
	}{{"order 8", T[1]}, {"order 4", T[2]}, {"order 1", T[0]}} {
		for i, R := range T {
			vs = append(vs, sigVector{
				name: fmt.Sprintf("key of %s, R = T·%d, s = 0", order.name, i),
				pub:  ed25519.PublicKey(order.A.Bytes()),
				sign: func([]byte) []byte { return append(R.Bytes(), make([]byte, 32)...) },
			})
		}
	}
	return vs
}

// entrySigPath runs one export line through the entry checks with its
// signature checked, as Verify does with AllSignatures.
func entrySigPath(pub ed25519.PublicKey, line []byte) error {
	done := false
	return audit.CheckLines(func() (audit.Line, bool, error) {
		if done {
			return audit.Line{}, false, nil
		}
		done = true
		return audit.Line{Bytes: line, CheckSig: true}, true, nil
	}, pub, func(r *audit.Checked) error {
		if r.Problem != "" {
			return errors.New(r.Problem)
		}
		return nil
	})
}

// checkpointSigPath opens a checkpoint note signed with sig.
func checkpointSigPath(pub ed25519.PublicKey, text string, sig []byte) error {
	vkey, err := note.NewEd25519VerifierKey(audit.KeyName, pub)
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return err
	}
	var hash [4]byte
	binary.BigEndian.PutUint32(hash[:], v.KeyHash())
	msg := text + "\n— " + audit.KeyName + " " + base64.StdEncoding.EncodeToString(append(hash[:], sig...)) + "\n"
	_, err = audit.OpenCheckpoint([]byte(msg), v)
	return err
}

func TestSignatureRule(t *testing.T) {
	entry := audit.Entry{Seq: 1, Time: "2026-03-01T09:30:01.000000001Z", Kind: vocab.KindCallAllowed, Tool: "t", PrevHash: hex.EncodeToString(make([]byte, 32))}
	sum, err := chainHash([32]byte{}, &entry)
	if err != nil {
		t.Fatal(err)
	}
	entry.Hash = hex.EncodeToString(sum[:])
	cpText := checkpointText(1, audit.LeafHash(sum))

	disagreements := 0
	for _, v := range sigVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			entrySig := v.sign(sum[:])
			cpSig := v.sign([]byte(cpText))
			wantEntry := ed25519.Verify(v.pub, sum[:], entrySig)
			wantCP := ed25519.Verify(v.pub, []byte(cpText), cpSig)
			if cofactoredAccepts(v.pub, sum[:], entrySig) != wantEntry {
				disagreements++
			}

			e := entry
			e.Sig = encodeSig(entrySig)
			line, err := encodeLine(&e)
			if err != nil {
				t.Fatal(err)
			}
			if err := entrySigPath(v.pub, line); (err == nil) != wantEntry {
				t.Errorf("entry path: %v; crypto/ed25519 says valid = %v", err, wantEntry)
			}
			if err := checkpointSigPath(v.pub, cpText, cpSig); (err == nil) != wantCP {
				t.Errorf("checkpoint path: %v; crypto/ed25519 says valid = %v", err, wantCP)
			}
		})
	}
	// The vectors are only worth having if they include the cases where
	// a cofactored check would have said yes and crypto/ed25519 no.
	t.Logf("%d vectors where the cofactored check and crypto/ed25519 disagree", disagreements)
	if disagreements < 3 {
		t.Fatalf("only %d vectors separate the cofactored check from crypto/ed25519", disagreements)
	}
}

// A whole export with one entry signed with a small-order component in R
// (by the real key, over the real hash) verifies by default, since the
// signed checkpoint authenticates the entry, and is refused with
// AllSignatures, because crypto/ed25519 refuses that signature. The same
// component in the checkpoint's signature is refused in both modes.
func TestSmallOrderSignatureInExport(t *testing.T) {
	key := seededKey(1)
	pub := pubText(key)
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	export := exportBytes(t, l, 0)
	lines, cp := splitExport(t, export)
	T := torsion(t)

	var e audit.Entry
	if err := json.Unmarshal(lines[3], &e); err != nil {
		t.Fatal(err)
	}
	hash, _ := decodeHash(e.Hash)
	mixed := signWithR(key, hash[:], T[1], nil)
	if !cofactoredAccepts(key.Public().(ed25519.PublicKey), hash[:], mixed) || ed25519.Verify(key.Public().(ed25519.PublicKey), hash[:], mixed) {
		t.Fatal("vector does not separate the two checks")
	}
	e.Sig = encodeSig(mixed)
	lines[3], _ = encodeLine(&e)
	forged := joinExport(lines, cp)
	// A sig an export carries is checked, asked or not (issue 27).
	for _, all := range []bool{false, true} {
		if _, err := Export(bytes.NewReader(forged), pub, Options{AllSignatures: all}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("seq 4: sig does not verify")) {
			t.Fatalf("all signatures %v: %v", all, err)
		}
	}

	// The checkpoint, re-signed with the same kind of signature.
	msg, _ := decodeCheckpointLine(cp)
	text := string(msg[:bytes.Index(msg, []byte("\n\n"))+1])
	s, _ := newSigner(key)
	var kh [4]byte
	binary.BigEndian.PutUint32(kh[:], s.KeyHash())
	sig := signWithR(key, []byte(text), T[1], nil)
	badCP, _ := audit.EncodeCheckpointLine([]byte(text + "\n— " + audit.KeyName + " " + base64.StdEncoding.EncodeToString(append(kh[:], sig...)) + "\n"))
	entries, _ := splitExport(t, export)
	wantVerifyErr(t, joinExport(entries, badCP), pub, nil, 10, "checkpoint signature does not verify with the server key")
}

// A server key of small order is refused before any signature is looked
// at: crypto/ed25519 would accept signatures for it that need no secret.
func TestSmallOrderPublicKeyRefused(t *testing.T) {
	for i, p := range torsion(t) {
		text := audit.PublicKeyText(ed25519.PublicKey(p.Bytes()))
		if _, _, err := audit.ParsePublicKey(text); err == nil || !strings.Contains(err.Error(), "small order") {
			t.Errorf("T·%d (%s): %v", i, text, err)
		}
	}
}
