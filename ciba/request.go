package ciba

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
)

// Bounds on what a client sends.
const (
	maxFormBytes      = 64 << 10
	maxBindingMessage = 128 // characters
	maxLoginHint      = 128
	maxExpiry         = 24 * time.Hour
)

// readForm reads a POST body of application/x-www-form-urlencoded
// parameters, as CIBA and OAuth require. Parameters in the URL are refused
// (secrets do not belong in URLs, which get logged), and so is any
// parameter given twice (RFC 6749 section 3.1).
func readForm(r *http.Request) (url.Values, *Error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, authError(CodeInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		return nil, authError(CodeInvalidRequest, "parameters belong in the form body, not the URL")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
	if err != nil {
		return nil, authError(CodeInvalidRequest, "cannot read the body: %v", err)
	}
	if len(body) > maxFormBytes {
		return nil, authError(CodeInvalidRequest, "the body is larger than %d bytes", maxFormBytes)
	}
	return parseForm(string(body))
}

func parseForm(body string) (url.Values, *Error) {
	form, err := url.ParseQuery(body)
	if err != nil {
		return nil, authError(CodeInvalidRequest, "malformed form body: %v", err)
	}
	for k, vs := range form {
		if len(vs) > 1 {
			return nil, authError(CodeInvalidRequest, "parameter %s is given %d times", quote(k), len(vs))
		}
	}
	return form, nil
}

// authRequest is a backchannel authentication request (CIBA Core section
// 7.1) as Countersign reads it.
type authRequest struct {
	Scope          []string
	LoginHint      string
	BindingMessage string
	// Details is authorization_details in RFC 8785 form; details is the
	// same, decoded.
	Details         json.RawMessage
	details         []any
	RequestedExpiry time.Duration // 0: none asked for
}

// args is the request as policy rules see it (args.login_hint,
// args.authorization_details[0].instructedAmount.amount, ...) and as the
// approvers approve it.
func (a *authRequest) args() map[string]any {
	m := map[string]any{
		"scope":                 strings.Join(a.Scope, " "),
		"login_hint":            a.LoginHint,
		"authorization_details": a.details,
	}
	if a.BindingMessage != "" {
		m["binding_message"] = a.BindingMessage
	}
	if a.RequestedExpiry > 0 {
		m["requested_expiry"] = a.RequestedExpiry.Seconds()
	}
	return m
}

// Scopes Countersign grants. CIBA requires openid; Countersign issues no
// ID token and no access to anything, so there is nothing else to ask for.
var supportedScopes = []string{"openid"}

// parseAuthRequest checks the parameters of a backchannel authentication
// request. Parameters it does not know are ignored, as OAuth requires;
// those it knows but does not support are refused rather than ignored, so
// a client never believes it got what it asked for.
func parseAuthRequest(form url.Values) (*authRequest, *Error) {
	for _, p := range []string{"request", "request_uri"} {
		if form.Has(p) {
			return nil, authError(CodeInvalidRequest, "%s: signed authentication requests are not supported; send the parameters in the form", p)
		}
	}
	for _, p := range []string{"login_hint_token", "id_token_hint"} {
		if form.Has(p) {
			return nil, authError(CodeInvalidRequest, "%s is not supported: name the approver with login_hint", p)
		}
	}
	if form.Has("user_code") {
		return nil, authError(CodeInvalidRequest, "user_code is not supported (backchannel_user_code_parameter_supported is false)")
	}
	a := &authRequest{}

	scope := form.Get("scope")
	if !form.Has("scope") || strings.TrimSpace(scope) == "" {
		return nil, authError(CodeInvalidRequest, "scope is required and must include openid")
	}
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(supportedScopes, s) {
			return nil, authError(CodeInvalidScope, "unknown scope %s (supported: %s)", quote(s), strings.Join(supportedScopes, " "))
		}
		if !slices.Contains(a.Scope, s) {
			a.Scope = append(a.Scope, s)
		}
	}
	if !slices.Contains(a.Scope, "openid") {
		return nil, authError(CodeInvalidScope, "scope must include openid")
	}

	a.LoginHint = form.Get("login_hint")
	if a.LoginHint == "" {
		return nil, authError(CodeInvalidRequest, "login_hint is required: the id of an approver, or role:NAME")
	}
	if utf8.RuneCountInString(a.LoginHint) > maxLoginHint || !utf8.ValidString(a.LoginHint) {
		return nil, authError(CodeInvalidRequest, "login_hint is not an approver id or role:NAME")
	}

	if form.Has("binding_message") {
		a.BindingMessage = form.Get("binding_message")
		if err := checkBindingMessage(a.BindingMessage); err != "" {
			return nil, authError(CodeInvalidBindingMsg, "binding_message %s", err)
		}
	}

	if form.Has("requested_expiry") {
		v := form.Get("requested_expiry")
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || strings.TrimLeft(v, "0123456789") != "" || n > int(maxExpiry/time.Second) {
			return nil, authError(CodeInvalidRequest, "requested_expiry must be a whole number of seconds from 1 to %d, got %s", int(maxExpiry.Seconds()), quote(v))
		}
		a.RequestedExpiry = time.Duration(n) * time.Second
	}

	raw := form.Get("authorization_details")
	if !form.Has("authorization_details") || raw == "" {
		return nil, authError(CodeInvalidRequest, "authorization_details is required: Countersign countersigns actions it can show the approver (types: %s)", strings.Join(authzdetails.Types(), ", "))
	}
	details, value, err := parseDetails(raw)
	if err != nil {
		return nil, authError(CodeInvalidAuthzDetails, "authorization_details: %v", err)
	}
	a.Details, a.details = details, value
	return a, nil
}

// checkBindingMessage returns why a binding message cannot be shown as
// it is on the approver page, or "". It is shown quoted, on one line.
func checkBindingMessage(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	if strings.TrimSpace(s) == "" {
		return "is empty"
	}
	if n := utf8.RuneCountInString(s); n > maxBindingMessage {
		return "is longer than " + strconv.Itoa(maxBindingMessage) + " characters"
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' || r == utf8.RuneError {
			return "contains an invisible or control character"
		}
	}
	return ""
}

// resolveHint returns the approvers a login_hint names: one approver by
// id, or every approver with a role ("role:treasury").
func resolveHint(hint string, approvers []config.Approver) []string {
	var out []string
	if role, ok := strings.CutPrefix(hint, "role:"); ok {
		for _, a := range approvers {
			if slices.Contains(a.Roles, role) {
				out = append(out, a.ID)
			}
		}
		return out
	}
	for _, a := range approvers {
		if a.ID == hint {
			out = append(out, a.ID)
		}
	}
	return out
}
