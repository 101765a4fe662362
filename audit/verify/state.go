package verify

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// logState is what replaying the entries in order has established: the
// enrolled credentials, the approval requests, the policies loaded and
// where format 2 began.
type logState struct {
	keys    keyChain // the server key in force (key.rotated)
	creds   credentials
	req     *requirements
	format2 int64 // seq of the first format 2 (or later) entry; 0 before one
	format  int   // the newest format seen
	format1 int64 // format 1 entries seen

	policies    map[string]*audit.Entry // policy.loaded entries by policy_sha256
	firstPolicy int64                   // seq of the first policy.loaded
	replayer    PolicyReplayer          // nil: decisions are not replayed
	roots       *x509.CertPool          // nil: enrollments' attestations are not checked
	attested    int                     // enrollments whose attestation was checked
	replayed    int
	unreplayed  int // decisions without a policy to replay them against
}

// PolicyReplayer checks a decision entry against the policy document its
// policy_sha256 names (Options.ReplayPolicy). This package does not
// interpret policies; the caller brings the policy engine.
type PolicyReplayer interface {
	Replay(policy json.RawMessage, e *audit.Entry) error
}

// policyRules checks the policy links of a format 2 entry and replays it.
func (s *logState) policyRules(e *audit.Entry) string {
	if e.Kind == vocab.KindPolicyLoaded {
		if len(e.Policy) == 0 {
			return "policy.loaded without a policy"
		}
		if sum, err := audit.PolicySHA256(e.Policy); err != nil || sum != e.PolicySHA256 {
			return fmt.Sprintf("policy_sha256 %s is not the SHA-256 of the policy's JCS form (%s)", e.PolicySHA256, sum)
		}
		if s.policies == nil {
			s.policies = map[string]*audit.Entry{}
		}
		if s.policies[e.PolicySHA256] == nil {
			s.policies[e.PolicySHA256] = e
		}
		if s.firstPolicy == 0 {
			s.firstPolicy = e.Seq
		}
		return ""
	}
	if len(e.Policy) > 0 {
		return string(e.Kind) + " carries a policy; only policy.loaded does"
	}
	if !audit.DecidedByPolicy(e.Kind) {
		if e.PolicySHA256 != "" {
			return string(e.Kind) + " names a policy; only decisions do"
		}
		return ""
	}
	var loaded *audit.Entry
	switch {
	case e.PolicySHA256 != "":
		if loaded = s.policies[e.PolicySHA256]; loaded == nil {
			return fmt.Sprintf("decided by policy %s, which no earlier policy.loaded carries", e.PolicySHA256)
		}
	case s.firstPolicy != 0:
		return fmt.Sprintf("%s names no policy, after a policy was loaded at seq %d", e.Kind, s.firstPolicy)
	}
	if s.replayer == nil || e.Kind == vocab.KindCallDenied {
		// A denial lets nothing run; replay checks what ran or was
		// put to the approvers.
		return ""
	}
	if loaded == nil {
		s.unreplayed++
		return ""
	}
	if len(e.Args) == 0 && !e.ArgsRedact {
		// The call's args are in an earlier entry (format 3): replay
		// on them, as the decision was made.
		if args := s.req.argsOf(e); len(args) > 0 {
			c := *e
			c.Args = args
			e = &c
		}
	}
	if err := s.replayer.Replay(loaded.Policy, e); err != nil {
		return fmt.Sprintf("policy replay (policy.loaded at seq %d): %v", loaded.Seq, err)
	}
	s.replayed++
	return ""
}

// apply checks one entry against the state and adds it; it returns why
// the entry breaks a rule, or "".
func (s *logState) apply(e *audit.Entry) string {
	switch e.V {
	case 0:
		if s.format2 != 0 {
			return fmt.Sprintf("format 1 entry after format 2 began at seq %d: a log never goes back to an older format", s.format2)
		}
		s.format1++
	default:
		if s.format2 == 0 {
			s.format2 = e.Seq
		}
		if e.V < s.format {
			return fmt.Sprintf("format %d entry after format %d: a log never goes back to an older format", e.V, s.format)
		}
		s.format = e.V
	}
	if reason := s.creds.check(e); reason != "" {
		return reason
	}
	if reason := idpRules(e); reason != "" {
		return reason
	}
	if reason := s.idpEligible(e); reason != "" {
		return reason
	}
	if e.Kind == vocab.KindApproverEnrolled && s.roots != nil {
		if reason := s.attestation(e); reason != "" {
			return reason
		}
	}
	if e.V == 0 {
		s.req.legacyRequest(e)
		return ""
	}
	if reason := s.policyRules(e); reason != "" {
		return reason
	}
	if reason := s.req.check(e); reason != "" {
		return reason
	}
	if reason := s.req.argsAt(e); reason != "" {
		return reason
	}
	return foreignMembers(e)
}

// attestation checks an enrollment's attestation against the roots, as of
// the enrollment's time.
func (s *logState) attestation(e *audit.Entry) string {
	if e.AttestationObject == "" {
		return fmt.Sprintf("approver.enrolled of %s's key %s keeps no attestation; the roots cannot vouch for it", e.Approver, e.CredentialID)
	}
	att, err1 := strictB64URL.DecodeString(e.AttestationObject)
	cd, err2 := strictB64URL.DecodeString(e.ClientDataJSON)
	if err1 != nil || err2 != nil {
		return "approver.enrolled: attestation_object or client_data_json is not base64url"
	}
	at, _ := time.Parse(audit.TimeFormat, e.Time)
	if _, err := attest.Check(att, cd, s.roots, at); err != nil {
		return fmt.Sprintf("approver.enrolled of %s's key %s: %v", e.Approver, e.CredentialID, err)
	}
	s.attested++
	return ""
}
