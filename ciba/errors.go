package ciba

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Error codes, each where CIBA Core 1.0 (sections 13 and 11), RFC 6749
// (5.2) or RFC 9396 (5) uses it.
const (
	// Backchannel authentication endpoint.
	CodeInvalidRequest      = "invalid_request"
	CodeInvalidScope        = "invalid_scope"
	CodeUnknownUserID       = "unknown_user_id"
	CodeUnauthorizedClient  = "unauthorized_client"
	CodeInvalidBindingMsg   = "invalid_binding_message"
	CodeInvalidClient       = "invalid_client"
	CodeAccessDenied        = "access_denied"
	CodeInvalidAuthzDetails = "invalid_authorization_details"

	// Token endpoint.
	CodeAuthorizationPending = "authorization_pending"
	CodeSlowDown             = "slow_down"
	CodeExpiredToken         = "expired_token"
	CodeInvalidGrant         = "invalid_grant"
	CodeUnsupportedGrantType = "unsupported_grant_type"

	CodeServerError = "server_error"
)

// Error is an OAuth error response: {"error": Code, "error_description": ...}.
type Error struct {
	Code        string
	Description string
	Status      int
	// Interval is set on slow_down: the interval, in seconds, the client
	// must keep from now on. It is an extension; CIBA has the client add
	// five seconds itself.
	Interval int
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// authError is an error of the backchannel authentication endpoint, with
// the status CIBA Core section 13 gives its code.
func authError(code, format string, args ...any) *Error {
	status := http.StatusBadRequest
	switch code {
	case CodeInvalidClient:
		status = http.StatusUnauthorized
	case CodeAccessDenied:
		status = http.StatusForbidden
	case CodeServerError:
		status = http.StatusInternalServerError
	}
	return &Error{Code: code, Description: fmt.Sprintf(format, args...), Status: status}
}

// tokenError is an error of the token endpoint: 400 but for
// invalid_client (RFC 6749 section 5.2).
func tokenError(code, format string, args ...any) *Error {
	e := authError(code, format, args...)
	if code != CodeInvalidClient && code != CodeServerError {
		e.Status = http.StatusBadRequest
	}
	return e
}

// write sends e as JSON. error_description may hold only printable ASCII
// other than '"' and '\' (RFC 6749 section 5.2), so anything else in it is
// replaced.
func (e *Error) write(w http.ResponseWriter) {
	body := map[string]any{"error": e.Code}
	if e.Description != "" {
		body["error_description"] = oauthText(e.Description)
	}
	if e.Interval > 0 {
		body["interval"] = e.Interval
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Add("WWW-Authenticate", `Basic realm="countersign"`)
		w.Header().Add("WWW-Authenticate", `Bearer realm="countersign"`)
	}
	writeJSON(w, e.Status, body)
}

func oauthText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteByte('\'')
		case r == '\\':
			b.WriteByte('/')
		case r < 0x20 || r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// writeJSON sends v with the headers every OAuth response carries: tokens
// and their errors must not be cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
