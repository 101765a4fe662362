package daemon

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// openIdentity opens the relying party of identity: (the company's
// OpenID Provider) and the table of the people it signs in; both nil
// without one. The provider is not asked anything yet: one that is down
// at start stops sign-ins and approvals through it, not the server.
func openIdentity(ctx context.Context, c *config.Config, db *store.DB, log *slog.Logger) (*identity.Provider, *identity.People, error) {
	if !c.Identity.Enabled() {
		return nil, nil, nil
	}
	people, err := identity.OpenPeople(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	redirect := strings.TrimRight(c.Approval.PublicURL, "/") + page.CallbackPath
	log.Info("approvers sign in through the identity provider", "issuer", c.Identity.Issuer, "redirect_uri", redirect)
	idp := identity.New(identity.Config{Identity: c.Identity, RedirectURL: redirect, MaxAuthAge: c.Approval.MaxAuthAge})
	people.Recheck(idp, c.Identity.Recheck, nil)
	return idp, people, nil
}

// identityRoles is identity.roles for the policy, nil without a provider.
func identityRoles(c *config.Config) map[string][]string {
	if !c.Identity.Enabled() {
		return nil
	}
	return c.Identity.Roles
}

// ProviderRevoker is who a grant revoked because the identity provider
// dropped its approver is recorded as revoked by.
const ProviderRevoker = "identity-provider"

// recordSuspensions appends approver.suspended when the provider, asked
// again, no longer puts a person in a group that grants a role, then
// revokes the standing grants they made (revoke: each gets its
// grant.revoked), so regaining the role later does not bring them back.
// Until the provider can be asked, the guard's recheck refuses their uses.
func recordSuspensions(people *identity.People, rec interface {
	Append(context.Context, audit.Entry) (audit.Entry, error)
}, revoke func(ctx context.Context, approver, by, reason string) ([]string, error), log *slog.Logger) {
	people.OnSuspend = func(ctx context.Context, p *identity.Person, why string) {
		ctx = context.WithoutCancel(ctx)
		e := audit.Entry{Kind: vocab.KindApproverSuspended, Approver: p.Approver(),
			IdPIssuer: p.Issuer, IdPSubject: p.Subject, IdPEmail: p.Email, IdPAuthTime: p.AuthTime.UTC().Format(time.RFC3339),
			IdPGroups: p.Groups, Reason: why + "; approvals by their keys are refused until it does again"}
		if _, err := rec.Append(ctx, e); err != nil {
			log.Error("cannot record an approver's suspension", "approver", e.Approver, "err", err)
		}
		log.Warn("approver suspended: the identity provider no longer gives them a role", "approver", e.Approver, "subject", p.Subject, "why", why)
		ids, err := revoke(ctx, e.Approver, ProviderRevoker, "the identity provider no longer grants "+p.DisplayName()+" an approver role")
		if err != nil {
			// The guard still refuses the grants' uses while they lack the role.
			log.Error("cannot revoke a suspended approver's standing grants", "approver", e.Approver, "err", err)
		} else if len(ids) > 0 {
			log.Warn("revoked a suspended approver's standing grants", "approver", e.Approver, "grants", ids)
		}
	}
}
