// Package digest computes the action digest: the exact bytes a security key
// signs when a human approves or denies a Countersign request.
//
// The digest is the WebAuthn challenge. It is computed by the server, never
// by the approver page, and recomputed offline by the audit verifier from an
// exported log entry, so its definition is part of the audit format:
//
//	challenge = SHA-256( "countersign/approval/v1\n" ||
//	                     auth_req_id "\n" || decision "\n" ||
//	                     JCS(authorization_details) "\n" ||
//	                     tool "\n" || hex(SHA-256(JCS(args))) "\n" ||
//	                     hex(SHA-256(display)) "\n" ||
//	                     base64url(nonce) "\n" || expires_at )
//
// JCS is RFC 8785 canonical JSON, base64url has no padding, and expires_at is
// RFC 3339 in UTC with whole seconds. decision is "approve" or "deny".
//
// The arguments enter through their SHA-256 rather than verbatim so that a
// tool whose arguments are redacted in the audit log (which keeps only
// args_sha256) can still have every approval checked offline.
//
// The package also makes that value of the arguments: [Args] is a call's
// arguments canonicalised once, where they enter the guard ([CheckExact],
// then [NewArgs]), and every later step (policy, approval request, run,
// approval token, audit entry) takes its bytes and SHA-256 instead of
// encoding the arguments again. It lives here, a leaf that approval, audit
// and guard already import, because the SHA-256 it carries is the one the
// digest above and the audit log's args_sha256 are defined over.
package digest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/vocab"
	"github.com/gowebpki/jcs"
)

// Prefix is the domain separator; a new format gets a new version.
const Prefix = "countersign/approval/v1\n"

// Action is everything an approval is bound to.
type Action struct {
	RequestID            string
	Decision             vocab.Decision
	AuthorizationDetails []byte // JSON, any formatting
	Tool                 string
	ArgsSHA256           [32]byte // ArgsSHA256 of the validated arguments
	Display              string   // the summary the approver was shown
	Nonce                []byte
	ExpiresAt            time.Time
}

// ErrDecision reports a decision other than vocab.Approve or vocab.Deny.
var ErrDecision = errors.New("digest: decision must be \"approve\" or \"deny\"")

// Compute returns the action digest.
func Compute(a Action) ([32]byte, error) {
	if a.Decision != vocab.Approve && a.Decision != vocab.Deny {
		return [32]byte{}, ErrDecision
	}
	if a.RequestID == "" || a.Tool == "" || len(a.Nonce) == 0 {
		return [32]byte{}, errors.New("digest: request id, tool and nonce are required")
	}
	details, err := jcs.Transform(a.AuthorizationDetails)
	if err != nil {
		return [32]byte{}, fmt.Errorf("digest: authorization_details: %w", err)
	}
	display := sha256.Sum256([]byte(a.Display))

	h := sha256.New()
	h.Write([]byte(Prefix))
	for _, field := range [][]byte{
		[]byte(a.RequestID), []byte(a.Decision), details, []byte(a.Tool),
		[]byte(hex.EncodeToString(a.ArgsSHA256[:])),
		[]byte(hex.EncodeToString(display[:])),
		[]byte(base64.RawURLEncoding.EncodeToString(a.Nonce)),
	} {
		h.Write(field)
		h.Write([]byte{'\n'})
	}
	h.Write([]byte(FormatTime(a.ExpiresAt)))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// ArgsSHA256 is the SHA-256 of the RFC 8785 form of args. The audit log keeps
// it for every call, redacted or not.
func ArgsSHA256(args []byte) ([32]byte, error) {
	canon, err := jcs.Transform(args)
	if err != nil {
		return [32]byte{}, fmt.Errorf("digest: args: %w", err)
	}
	return sha256.Sum256(canon), nil
}

// FormatTime is the one textual form of expires_at, in the digest and in the
// audit log alike.
func FormatTime(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format(time.RFC3339)
}
