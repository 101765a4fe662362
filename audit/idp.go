package audit

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// IdPApproverID is the approver id of the person an identity provider
// with issuer names subject: "idp-" and 16 lower-case base32 letters of
// SHA-256(issuer "\n" subject). Entries of such a person carry idp_issuer
// and idp_subject beside it, and an auditor recomputes it from them.
func IdPApproverID(issuer, subject string) string {
	h := sha256.Sum256([]byte(issuer + "\n" + subject))
	return "idp-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:10]))
}
