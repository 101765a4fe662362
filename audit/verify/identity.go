package verify

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
	case vocab.KindApprovalAssertion, vocab.KindApprovalDenied, vocab.KindApproverSuspended:
	default:
		return fmt.Sprintf("%s carries idp_ members: only enrollments, key decisions and suspensions name a person of the identity provider", e.Kind)
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

// idpPolicy is what of a logged policy document (policy.loaded) says who
// of the identity provider may approve: the groups that grant each role,
// and the approvers each tool names. This is all this package reads of a
// policy; replaying decisions is the caller's (PolicyReplayer).
type idpPolicy struct {
	IdentityRoles map[string][]string `json:"identity_roles"`
	Tools         map[string]struct {
		Approvers []string `json:"approvers"`
		Rules     []struct {
			Approvers []string `json:"approvers"`
		} `json:"rules"`
	} `json:"tools"`
	Upstreams []struct {
		Prefix    string   `json:"prefix"`
		Approvers []string `json:"approvers"`
	} `json:"upstreams"`
}

// roles are the roles the policy names for tool (role:NAME among its
// approvers or a rule's; for an upstream tool it does not list, the
// upstream's).
func (p *idpPolicy) roles(tool string) []string {
	var named []string
	if t, ok := p.Tools[tool]; ok {
		named = append(named, t.Approvers...)
		for _, r := range t.Rules {
			named = append(named, r.Approvers...)
		}
	} else {
		for _, u := range p.Upstreams {
			if strings.HasPrefix(tool, u.Prefix) {
				named = append(named, u.Approvers...)
			}
		}
	}
	var roles []string
	for _, a := range named {
		if r, ok := strings.CutPrefix(a, "role:"); ok && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	return roles
}

// idpEligible checks an approval by a person of the identity provider
// on a request made under a logged policy: the groups the entry records
// must map, under that policy's identity_roles, to a role it names for
// the request's tool. (That the approver was among the request's
// eligible is requirements' check.) A denial is not held to it: it only
// takes power away, and a person who left the group may still deny what
// was put before them.
func (s *logState) idpEligible(e *audit.Entry) string {
	if e.IdPIssuer == "" || e.Kind != vocab.KindApprovalAssertion {
		return ""
	}
	r := s.req.requests[e.RequestID]
	if r == nil || r.entry == nil || r.entry.PolicySHA256 == "" {
		return "" // requirements says what is wrong with the request
	}
	loaded := s.policies[r.entry.PolicySHA256]
	if loaded == nil {
		return ""
	}
	var p idpPolicy
	if err := json.Unmarshal(loaded.Policy, &p); err != nil {
		return fmt.Sprintf("the policy of request %s (seq %d) is not a policy document: %v", e.RequestID, loaded.Seq, err)
	}
	roles := p.roles(r.entry.Tool)
	for _, role := range roles {
		if slices.ContainsFunc(p.IdentityRoles[role], func(g string) bool { return slices.Contains(e.IdPGroups, g) }) {
			return ""
		}
	}
	return fmt.Sprintf("%s's groups [%s] at %s give none of the roles [%s] the policy at seq %d lets decide %s",
		e.IdPSubject, strings.Join(e.IdPGroups, ", "), e.IdPIssuer, strings.Join(roles, ", "), loaded.Seq, r.entry.Tool)
}
