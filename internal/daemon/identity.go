package daemon

import (
	"context"
	"log/slog"
	"strings"

	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/store"
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
