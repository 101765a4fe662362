package digest

import "crypto/sha256"

// AssertionSHA256 names one WebAuthn assertion:
//
//	SHA-256( authenticatorData || SHA-256(clientDataJSON) || signature )
//
// that is, the message the security key signed followed by its signature.
// The audit entry of an assertion carries all three fields (base64url), so
// an auditor recomputes it from the export; approval tokens (package token)
// name each approver's assertion by it.
func AssertionSHA256(authenticatorData, clientDataJSON, signature []byte) [32]byte {
	cd := sha256.Sum256(clientDataJSON)
	h := sha256.New()
	h.Write(authenticatorData)
	h.Write(cd[:])
	h.Write(signature)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}
