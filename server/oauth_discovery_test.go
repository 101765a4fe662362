package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Issuers with a path publish their metadata at different places: Keycloak
// and Entra ID append the well-known path to the issuer, RFC 8414 inserts
// it. Each is found, and a document naming another issuer is refused.
func TestDiscoverJWKSWhereProvidersPublishIt(t *testing.T) {
	var issuer string
	served := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := served[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, doc)
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, tc := range []struct{ issuerPath, metadataPath string }{
		{"", "/.well-known/oauth-authorization-server"},
		{"", "/.well-known/openid-configuration"},
		{"/", "/.well-known/openid-configuration"}, // Auth0's issuer ends in a slash
		{"/tenant/v2.0", "/tenant/v2.0/.well-known/openid-configuration"},
		{"/oauth2/default", "/.well-known/oauth-authorization-server/oauth2/default"},
	} {
		issuer = srv.URL + tc.issuerPath
		served = map[string]string{tc.metadataPath: fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, issuer, issuer+"/keys")}
		got, err := discoverJWKS(ctx, srv.Client(), issuer)
		if err != nil || got != issuer+"/keys" {
			t.Errorf("issuer %q, metadata at %s: %q %v", issuer, tc.metadataPath, got, err)
		}
	}
	issuer = srv.URL + "/realms/acme"
	served = map[string]string{"/realms/acme/.well-known/openid-configuration": `{"issuer":"https://elsewhere.example.com","jwks_uri":"https://elsewhere.example.com/keys"}`}
	if _, err := discoverJWKS(ctx, srv.Client(), issuer); err == nil || !strings.Contains(err.Error(), "names the issuer") {
		t.Errorf("metadata of another issuer: %v", err)
	}
	served = map[string]string{}
	if _, err := discoverJWKS(ctx, srv.Client(), issuer); err == nil || !strings.Contains(err.Error(), "no authorization server metadata") {
		t.Errorf("no metadata: %v", err)
	}
}
