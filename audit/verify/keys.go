package verify

import (
	"crypto/ed25519"

	"github.com/countersign/countersign/audit"
	"golang.org/x/mod/sumdb/note"
)

// keyChain is the server key in force as an export is read: the key the
// auditor gave, then each key a key.rotated entry hands over to. A
// rotation counts only when the key in force signed it (its sig, always
// checked) and the new key signed the hand-over, so a key the auditor
// never trusted cannot take over the log.
type keyChain struct {
	inForce ed25519.PublicKey
	retired []ed25519.PublicKey // oldest first
}

// rotate checks a key.rotated entry against the key in force and moves
// on to its new key; it returns why not, or "".
func (k *keyChain) rotate(e *audit.Entry) string {
	next, why := audit.RotationProblem(e, k.inForce)
	if why != "" {
		return why
	}
	k.retired = append(k.retired, k.inForce)
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
