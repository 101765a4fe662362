package verify

import (
	"encoding/hex"
	"fmt"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// A batch approval is one WebAuthn assertion over several requests: the
// key signs [digest.BatchChallenge] of the action digests of all of them,
// sorted. The server records it as one approval.assertion entry per
// request, each a complete key decision about its own request (digest
// inputs, approver, credential, the assertion itself) plus
//
//   - batch_digests: every action digest of the batch, lowercase hex, in
//     the order signed (ascending), and
//   - batch_position: the index of this entry's request among them (the
//     member is absent when it is 0).
//
// The verifier recomputes this entry's own action digest, requires it at
// batch_position, recomputes the batch challenge from batch_digests and
// checks the signature over that; the requirements require that the
// request was raised batchable and below critical. Everything else (the
// approver is eligible, decided before expiry, quorum) is checked per
// request exactly as for a single approval.

// signedChallenge returns what the key must have signed for the key
// decision e whose own action digest is own, and how to name it in an
// error: own itself, or for a batch member the batch challenge.
func signedChallenge(e *audit.Entry, own [32]byte) ([32]byte, string, error) {
	if len(e.BatchDigests) == 0 {
		if e.BatchPosition != 0 {
			return own, "", fmt.Errorf("batch_position %d without batch_digests", e.BatchPosition)
		}
		return own, "the action digest of this entry (decision, request, arguments, display, nonce or expiry differ)", nil
	}
	if e.Kind != vocab.KindApprovalAssertion {
		return own, "", fmt.Errorf("%s cannot be part of a batch: only approvals are batched", e.Kind)
	}
	list := make([][32]byte, len(e.BatchDigests))
	for i, h := range e.BatchDigests {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 || hex.EncodeToString(b) != h {
			return own, "", fmt.Errorf("batch_digests[%d] is not 64 lowercase hex digits", i)
		}
		list[i] = [32]byte(b)
	}
	if e.BatchPosition < 0 || e.BatchPosition >= len(list) {
		return own, "", fmt.Errorf("batch_position %d is outside batch_digests (%d digests)", e.BatchPosition, len(list))
	}
	if list[e.BatchPosition] != own {
		return own, "", fmt.Errorf("this entry's action digest is not batch_digests[%d]: the signed batch does not include this request as recorded", e.BatchPosition)
	}
	challenge, err := digest.BatchChallenge(list)
	if err != nil {
		return own, "", fmt.Errorf("batch_digests: %v", err)
	}
	return challenge, fmt.Sprintf("the batch challenge of batch_digests (%d requests)", len(list)), nil
}

// batchRule is the requirement a batched approval adds: its request was
// raised batchable, and not critical (where each approver taps for that
// request alone, with user verification).
func batchRule(req, e *audit.Entry) string {
	if len(e.BatchDigests) == 0 {
		return ""
	}
	switch {
	case req.Level == vocab.LevelCritical:
		return fmt.Sprintf("request %s is critical; it cannot be approved in a batch", e.RequestID)
	case !req.Batchable:
		return fmt.Sprintf("request %s was not raised batchable; it cannot be approved in a batch", e.RequestID)
	}
	return ""
}
