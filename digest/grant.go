package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// GrantPrefix is the domain separator of the grant digest: no action
// digest can ever equal a grant digest, nor the other way round.
const GrantPrefix = "countersign/grant/v1\n"

// Grant is what an approver signs to approve a request and, with the same
// tap, grant that further calls matching Condition run without a new one:
//
//	challenge = SHA-256( "countersign/grant/v1\n" ||
//	                     hex(action digest of (request, "approve")) "\n" ||
//	                     grant_id "\n" ||
//	                     hex(SHA-256(condition)) "\n" ||
//	                     max_calls (decimal) "\n" ||
//	                     expires_at )
//
// The action digest binds the request exactly as a plain approval does;
// condition is the CEL expression a later call must satisfy, as the page
// showed it; max_calls and expires_at (RFC 3339, UTC, whole seconds) are
// the limits the approver chose. A key's assertion over this challenge is
// the approval of the request and the grant, and verifies for nothing else.
type Grant struct {
	Request   [32]byte // Compute of the request with Decision Approve
	GrantID   string
	Condition string
	MaxCalls  int
	ExpiresAt time.Time
}

// ComputeGrant returns the grant digest.
func ComputeGrant(g Grant) ([32]byte, error) {
	if g.GrantID == "" || g.Condition == "" || g.MaxCalls < 1 || g.ExpiresAt.IsZero() {
		return [32]byte{}, errors.New("digest: grant id, condition, max_calls >= 1 and expires_at are required")
	}
	cond := sha256.Sum256([]byte(g.Condition))
	h := sha256.New()
	h.Write([]byte(GrantPrefix))
	for _, field := range []string{
		hex.EncodeToString(g.Request[:]), g.GrantID, hex.EncodeToString(cond[:]), strconv.Itoa(g.MaxCalls),
	} {
		h.Write([]byte(field))
		h.Write([]byte{'\n'})
	}
	h.Write([]byte(FormatTime(g.ExpiresAt)))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}
