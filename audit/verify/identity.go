package verify

import (
	"fmt"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// idpRules checks the members that say who the company's identity
// provider signed in (idp_*): they go together, on the kinds that may
// carry them, name the entry's approver (whose id is derived from issuer
// and subject, audit.IdPApproverID), and give a well-formed auth time.
// Groups belong to key decisions only.
func idpRules(e *audit.Entry) string {
	if e.IdPIssuer == "" && e.IdPSubject == "" && e.IdPEmail == "" && e.IdPAuthTime == "" && len(e.IdPGroups) == 0 {
		return ""
	}
	switch e.Kind {
	case vocab.KindEnrollmentCreated, vocab.KindApproverEnrolled:
		if len(e.IdPGroups) > 0 {
			return fmt.Sprintf("%s carries idp_groups: only key decisions record the groups", e.Kind)
		}
	case vocab.KindApprovalAssertion, vocab.KindApprovalDenied:
	default:
		return fmt.Sprintf("%s carries idp_ members: only enrollments and key decisions name a person of the identity provider", e.Kind)
	}
	if e.IdPIssuer == "" || e.IdPSubject == "" {
		return "idp_ members without idp_issuer and idp_subject"
	}
	if want := audit.IdPApproverID(e.IdPIssuer, e.IdPSubject); e.Approver != want {
		return fmt.Sprintf("approver %q is not the id %q of %s at %s", e.Approver, want, e.IdPSubject, e.IdPIssuer)
	}
	if _, err := time.Parse(time.RFC3339, e.IdPAuthTime); err != nil {
		return fmt.Sprintf("idp_auth_time %q is not an RFC 3339 time", e.IdPAuthTime)
	}
	return ""
}
