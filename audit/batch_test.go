package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestBatchVerifier(t *testing.T) {
	key := seededKey(1)
	pub := key.Public().(ed25519.PublicKey)
	bv, err := newBatchVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(n int) (msgs, sigs [][]byte) {
		for i := range n {
			m := sha256.Sum256([]byte(fmt.Sprint(i)))
			msgs = append(msgs, m[:])
			sigs = append(sigs, ed25519.Sign(key, m[:]))
		}
		return msgs, sigs
	}
	for _, n := range []int{1, 2, 7, 64} {
		msgs, sigs := sign(n)
		if !bv.verify(msgs, sigs) {
			t.Fatalf("batch of %d valid signatures refused", n)
		}
		for i := range n {
			for _, mutate := range []func(){
				func() { sigs[i][0] ^= 1 },     // R
				func() { sigs[i][40] ^= 1 },    // s
				func() { sigs[i][63] |= 0xf0 }, // s not canonical
				func() { msgs[i][5] ^= 1 },     // message
			} {
				ms := cloneAll(msgs)
				ss := cloneAll(sigs)
				msgs, sigs = cloneAll(ms), cloneAll(ss)
				mutate()
				if bv.verify(msgs, sigs) {
					t.Fatalf("batch of %d passed with entry %d altered", n, i)
				}
				msgs, sigs = ms, ss
			}
		}
		// Swapped signatures are each valid for the other message.
		if n > 1 {
			ss := cloneAll(sigs)
			ss[0], ss[1] = ss[1], ss[0]
			if bv.verify(msgs, ss) {
				t.Fatal("batch passed with two signatures swapped")
			}
		}
	}
	other := seededKey(2)
	m := sha256.Sum256([]byte("x"))
	if bv.verify([][]byte{m[:]}, [][]byte{ed25519.Sign(other, m[:])}) {
		t.Fatal("signature by another key passed")
	}
}

func cloneAll(xs [][]byte) [][]byte {
	out := make([][]byte, len(xs))
	for i, x := range xs {
		out[i] = append([]byte(nil), x...)
	}
	return out
}
