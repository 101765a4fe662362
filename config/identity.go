package config

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"time"
)

// Identity names the company's OpenID Provider, from which approvers sign
// in on the page and whose groups give them roles (package identity).
// Without an issuer there is none: approvers come from the YAML list only.
type Identity struct {
	// Issuer is the provider's issuer URL, exactly as its discovery
	// document (Issuer + /.well-known/openid-configuration) states it.
	Issuer   string `mapstructure:"issuer"`
	ClientID string `mapstructure:"client_id"`
	// ClientSecret is better given as COUNTERSIGN_IDENTITY_CLIENT_SECRET
	// than written in the file; `config print` never shows it.
	ClientSecret string   `mapstructure:"client_secret"`
	Scopes       []string `mapstructure:"scopes"`
	// SubjectClaim names the claim that names a person: sub (default, the
	// provider's stable id) or email.
	SubjectClaim string `mapstructure:"subject_claim"`
	// GroupsClaim is the claim (ID token or userinfo) listing the
	// person's groups.
	GroupsClaim string `mapstructure:"groups_claim"`
	// Roles maps a Countersign role (what tools' approvers name as
	// role:NAME) to the provider's groups that grant it.
	Roles map[string][]string `mapstructure:"roles"`
	// Recheck bounds how long a person's groups, as the provider last
	// said, are trusted before a decision asks it again.
	Recheck time.Duration `mapstructure:"recheck"`
}

// Enabled reports whether an identity provider is configured.
func (i Identity) Enabled() bool { return i.Issuer != "" }

// RolesOf returns the roles that groups grant, sorted: every role one of
// whose mapped groups is among groups.
func (i Identity) RolesOf(groups []string) []string {
	var roles []string
	for role, granting := range i.Roles {
		if slices.ContainsFunc(granting, func(g string) bool { return slices.Contains(groups, g) }) {
			roles = append(roles, role)
		}
	}
	sort.Strings(roles)
	return roles
}

// DefaultMaxAuthAge is approval.max_auth_age when unset: past it an
// approver signed in through the provider must sign in there again.
const DefaultMaxAuthAge = 12 * time.Hour

// validateIdentity checks identity: and approval.max_auth_age. Nothing
// but max_auth_age is checked while no issuer is set, except that other
// identity settings without one are refused: they would be silently
// ignored.
func (c *Config) validateIdentity(v *validator) {
	v.positive("approval.max_auth_age", c.Approval.MaxAuthAge)
	id := c.Identity
	if !id.Enabled() {
		if id.ClientID != "" || id.ClientSecret != "" || len(id.Roles) > 0 {
			v.fail("identity.issuer", "required when other identity settings are given (the provider's issuer URL, e.g. https://login.example.com/realms/acme)")
		}
		return
	}
	v.url("identity.issuer", id.Issuer)
	if u, err := url.Parse(id.Issuer); err == nil && (u.RawQuery != "" || u.Fragment != "") {
		v.fail("identity.issuer", "expected a URL without query or fragment, got %q", id.Issuer)
	} else if err == nil && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		v.fail("identity.issuer", "%s is plain http on a host other than this machine: a provider's tokens and keys must come over https", id.Issuer)
	}
	v.nonEmpty("identity.client_id", id.ClientID)
	if !slices.Contains(id.Scopes, "openid") {
		v.fail("identity.scopes", "must include openid (OpenID Connect returns no ID token without it), got %v", id.Scopes)
	}
	v.oneOf("identity.subject_claim", id.SubjectClaim, "sub", "email")
	v.nonEmpty("identity.groups_claim", id.GroupsClaim)
	v.positive("identity.recheck", id.Recheck)
	if len(id.Roles) == 0 {
		v.fail("identity.roles", "expected at least one role mapped to the provider's groups, e.g. {treasury: [finance-approvers]}: without one nobody from the provider may approve")
	}
	roles := make([]string, 0, len(id.Roles))
	for r := range id.Roles {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, r := range roles {
		p := "identity.roles." + r
		v.id(p, r)
		if len(id.Roles[r]) == 0 {
			v.fail(p, "expected at least one group of the provider")
		}
		for j, g := range id.Roles[r] {
			v.nonEmpty(fmt.Sprintf("%s[%d]", p, j), g)
		}
	}
}
