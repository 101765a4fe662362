package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const withIdentity = minimal + `
approvers: []
identity:
  issuer: https://login.example.com/realms/acme
  client_id: countersign
  roles:
    treasury: [Finance-Approvers, cfo]
    ops: [sre]
`

func TestIdentityDefaultsAndSecretFromEnvironment(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("COUNTERSIGN_IDENTITY_CLIENT_SECRET", "s3cret")
	c, err := Parse([]byte(withIdentity), "idp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	id := c.Identity
	if !id.Enabled() || id.ClientSecret != "s3cret" || id.SubjectClaim != "sub" || id.GroupsClaim != "groups" ||
		id.Recheck != 5*time.Minute || !slices.Equal(id.Scopes, []string{"openid", "email", "profile"}) {
		t.Errorf("identity defaults: %+v", id)
	}
	if c.Approval.MaxAuthAge != 12*time.Hour {
		t.Errorf("approval.max_auth_age = %s, want 12h", c.Approval.MaxAuthAge)
	}
	if len(c.Approvers) != 0 {
		t.Errorf("approvers: [] became %v", c.Approvers)
	}
	// Group names keep their case: they are the provider's data.
	if got := id.RolesOf([]string{"Finance-Approvers", "sre", "other"}); !slices.Equal(got, []string{"ops", "treasury"}) {
		t.Errorf("RolesOf = %v", got)
	}
	if got := id.RolesOf([]string{"finance-approvers"}); len(got) != 0 {
		t.Errorf("RolesOf a group in other case = %v, want none", got)
	}
	out, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("config print shows the client secret:\n%s", out)
	}
}

func TestWithoutIdentityNothingIsRequired(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.Enabled() {
		t.Errorf("identity enabled by default: %+v", c.Identity)
	}
}

func TestIdentityProblemsNameTheirPath(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	for _, tc := range []struct{ name, yaml, want string }{
		{"settings without issuer", minimal + "identity: {client_id: x}\n", "identity.issuer: required when other identity settings"},
		{"issuer not a URL", minimal + "identity: {issuer: login, client_id: x, roles: {ops: [sre]}}\n", "identity.issuer: expected an http(s) URL"},
		{"plain http elsewhere", minimal + "identity: {issuer: http://login.example.com, client_id: x, roles: {ops: [sre]}}\n", "identity.issuer: http://login.example.com is plain http"},
		{"no client id", minimal + "identity: {issuer: https://login.example.com, roles: {ops: [sre]}}\n", "identity.client_id: required"},
		{"no openid scope", minimal + "identity: {issuer: https://login.example.com, client_id: x, scopes: [email], roles: {ops: [sre]}}\n", "identity.scopes: must include openid"},
		{"bad subject claim", minimal + "identity: {issuer: https://login.example.com, client_id: x, subject_claim: name, roles: {ops: [sre]}}\n", `identity.subject_claim: expected one of sub, email, got "name"`},
		{"no roles", minimal + "identity: {issuer: https://login.example.com, client_id: x}\n", "identity.roles: expected at least one role"},
		{"role without groups", minimal + "identity: {issuer: https://login.example.com, client_id: x, roles: {ops: []}}\n", "identity.roles.ops: expected at least one group"},
		{"bad role id", minimal + "identity: {issuer: https://login.example.com, client_id: x, roles: {\"o p\": [sre]}}\n", "identity.roles.o p: expected a lower-case id"},
		{"zero recheck", minimal + "identity: {issuer: https://login.example.com, client_id: x, recheck: 0s, roles: {ops: [sre]}}\n", "identity.recheck: expected a positive duration"},
		{"zero max auth age", minimal + "approval: {max_auth_age: 0s}\n", "approval.max_auth_age: expected a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "idp.yaml")
			if err == nil || !strings.Contains(err.Error(), "idp.yaml: "+tc.want) {
				t.Errorf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

// A notify channel may select the requests of a role only people of the
// identity provider hold.
func TestNotifyForARoleOfTheIdentityProvider(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	const channel = "notify:\n  - {type: ntfy, url: http://127.0.0.1:1/topic, for: [\"role:treasury\"]}\n"
	if _, err := Parse([]byte(withIdentity+channel), "idp.yaml"); err != nil {
		t.Errorf("with identity: %v", err)
	}
	if _, err := Parse([]byte(minimal+"approvers: []\n"+channel), "min.yaml"); err == nil || !strings.Contains(err.Error(), `no approver has the role "treasury"`) {
		t.Errorf("without identity: %v", err)
	}
}
