package ciba

import (
	"encoding/json"
	"net/http"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/token"
)

// Metadata is the discovery document (OpenID Connect Discovery 1.0 with
// the CIBA Core section 4 and RFC 9396 section 10 members). It describes
// what this server does and nothing more: it has no authorization
// endpoint and issues no ID tokens, so the members about those are absent.
func (s *Server) Metadata() map[string]any {
	iss := s.opts.Issuer
	m := map[string]any{
		"issuer":                                iss,
		"jwks_uri":                              iss + PathJWKS,
		"token_endpoint":                        iss + PathToken,
		"scopes_supported":                      supportedScopes,
		"authorization_details_types_supported": authzdetails.Types(),
		"grant_types_supported":                 []string{},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic"},
		// Countersign's own: how approval tokens are signed and typed.
		"countersign_approval_token_signing_alg_values_supported": []string{"EdDSA"},
		"countersign_approval_token_typ":                          token.Type,
	}
	if len(s.dir.Load().clients) == 0 {
		m["token_endpoint_auth_methods_supported"] = []string{"none"}
	}
	if s.opts.Enabled {
		m["grant_types_supported"] = []string{GrantType}
		m["backchannel_authentication_endpoint"] = iss + PathAuthorize
		m["backchannel_token_delivery_modes_supported"] = []string{"poll"}
		m["backchannel_user_code_parameter_supported"] = false
	}
	return m
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if !readOnly(w, r) {
		return
	}
	publicJSON(w, s.Metadata())
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	if !readOnly(w, r) {
		return
	}
	publicJSON(w, s.opts.Keys.JWKS())
}

func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// publicJSON serves a public document that changes only when the server's
// configuration or key does.
func publicJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(append(b, '\n'))
}
