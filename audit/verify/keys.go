package verify

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"math"

	"github.com/countersign/countersign/audit"
	"golang.org/x/mod/sumdb/note"
)

// keyChain is the server key in force as an export is read: the key the
// auditor gave, then each key a key.rotated entry hands over to. A
// rotation counts only when the key in force signed it (its sig, always
// checked) and the new key signed the hand-over, so a key the auditor
// never trusted cannot take over the log.
type keyChain struct {
	first   ed25519.PublicKey
	inForce ed25519.PublicKey
	changes []keyChange // oldest first
}

// keyChange is a rotation: key signs the entries after seq.
type keyChange struct {
	seq int64
	key ed25519.PublicKey
}

// start sets the key the auditor gave, unless a previous export's chain
// goes on.
func (k *keyChain) start(pub ed25519.PublicKey) {
	if k.first == nil {
		k.first, k.inForce = pub, pub
	}
}

// at is the key that signed entry seq.
func (k *keyChain) at(seq int64) ed25519.PublicKey {
	key := k.first
	for _, c := range k.changes {
		if c.seq < seq {
			key = c.key
		}
	}
	return key
}

// rotate checks a key.rotated entry against the key in force and moves
// on to its new key; it returns why not, or "".
func (k *keyChain) rotate(e *audit.Entry) string {
	next, why := audit.RotationProblem(e, k.inForce)
	if why != "" {
		return why
	}
	k.changes = append(k.changes, keyChange{e.Seq, next})
	k.inForce = next
	return ""
}

// verifier is the note verifier of the key in force: the final
// checkpoint must be signed by it.
func (k *keyChain) verifier() note.Verifier {
	_, v, err := audit.ParsePublicKey(audit.PublicKeyText(k.inForce))
	if err != nil {
		// The key was parsed from this form (or given in it) before.
		panic("verify: " + err.Error())
	}
	return v
}

// firstSeq is the seq of the first line br holds, read without consuming
// it (a line starts {"seq":N), or 0 if it does not look like an entry.
func firstSeq(br *bufio.Reader) int64 {
	b, _ := br.Peek(32)
	rest, ok := bytes.CutPrefix(b, []byte(`{"seq":`))
	if !ok {
		return 0
	}
	var n int64
	for _, c := range rest {
		if c < '0' || c > '9' || n > math.MaxInt64/10-1 {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
