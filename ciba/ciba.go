// Package ciba is Countersign's OpenID Connect Client-Initiated Backchannel
// Authentication endpoint (CIBA Core 1.0, poll mode) with RFC 9396
// authorization_details: how a service that does not speak MCP (a CI job,
// a payment worker, a script) asks for a human's countersignature, and
// gets back an approval token (package token) that whoever performs the
// action can verify for itself against the published keys.
//
//	POST /bc-authorize  scope=openid, login_hint, authorization_details,
//	                    [binding_message], [requested_expiry]
//	                    -> {"auth_req_id", "expires_in", "interval"}
//	POST /token         grant_type=urn:openid:params:grant-type:ciba, auth_req_id
//	                    -> authorization_pending | slow_down | expired_token |
//	                       access_denied | invalid_grant, or, once approved:
//	                       {"approval_token", "access_token" (the same),
//	                        "token_type": "N_A", "expires_in", "authorization_details"}
//	GET  /.well-known/openid-configuration, /.well-known/jwks.json   (public)
//
// Both POST endpoints take application/x-www-form-urlencoded bodies and
// answer OAuth errors as JSON. A request is an approval request like any
// countersigned tool call, for the policy entry tools.ciba: the guard
// (package guard) decides it with the same policy (level, rules over args,
// approvers, quorum), raises it, and records every step in the audit log;
// the approver page shows its authorization_details and binding_message.
// A detail that describes what a built-in tool does (a payment, a
// deployment, a secret read) is also judged by that tool's policy, with
// the facts the tool gathers, and tools.ciba is the floor (actions.go).
// login_hint names an approver or a role ("alice", "role:treasury") and
// narrows the approvers policy allows to those; it must leave enough of
// them for the quorum. The token endpoint hands out the approval token
// once: the exchange is the request's one execution, recorded as
// call.executed with the token's SHA-256.
//
// Clients authenticate as agents do on the same listener: with
// http.agents configured, with the agent's token as a bearer token, or
// with HTTP Basic client_id (the agent id) and client_secret (its token);
// with none configured, anonymous clients from loopback only. Requests
// that carry browser headers (Origin, Sec-Fetch-Site) are refused: the
// backchannel is for servers, and a web page must not be able to raise
// requests on a loopback listener.
//
// Not implemented, on purpose: ping and push delivery (a client would
// need a callback endpoint; poll is enough), signed authentication
// requests, login_hint_token and id_token_hint (approvers are named by id
// or role), user codes, and ID, access or refresh tokens (there is no
// user session and no resource to grant; the approval token is the
// result).
package ciba

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
)

// Tool is the policy entry of CIBA requests: tools.ciba.
const Tool = "ciba"

// GrantType is the CIBA grant type of the token endpoint.
const GrantType = "urn:openid:params:grant-type:ciba"

// Paths on the agent listener.
const (
	PathAuthorize = "/bc-authorize"
	PathToken     = "/token"
	PathDiscovery = "/.well-known/openid-configuration"
	PathJWKS      = "/.well-known/jwks.json"
)

// Countersigner raises backchannel requests and redeems them for approval
// tokens; *guard.Guard satisfies it.
type Countersigner interface {
	Raise(ctx context.Context, b guard.Backchannel) (*approval.Request, error)
	Offers(tool string) bool
	RestoreBackchannel(ctx context.Context, tool string, entries []audit.Entry, actions func(context.Context, map[string]any) []guard.Action) error
	PrepareAction(ctx context.Context, tool string, args map[string]any) (*tools.Call, error)
	Redeem(ctx context.Context, tool, id, agent string) (*approval.PollStatus, string, error)
	RecordRejected(ctx context.Context, agent, tool, reason string)
}

// KeySet is the published key set of approval tokens; *token.Signer
// satisfies it.
type KeySet interface {
	JWKS() jose.JSONWebKeySet
}

// Options configure a Server.
type Options struct {
	// Issuer is the base URL of the agent listener as clients reach it,
	// and the iss of approval tokens.
	Issuer    string
	Guard     Countersigner
	Keys      KeySet
	Agents    []config.Agent    // http.agents; none: anonymous clients from loopback
	Approvers []config.Approver // whom login_hint can name
	// Accounts are the ledger's accounts: a payment that names no
	// debtorAccount is judged as a transfer from the one account in its
	// currency (actions.go).
	Accounts []config.Account
	// Upstreams are the MCP servers Countersign fronts: an mcp_tool_call
	// detail naming one is judged by its tool's policy (actions.go).
	Upstreams []config.Upstream
	// Enabled says tools.ciba is configured. Without it the backchannel
	// endpoint refuses every request (unauthorized_client) and discovery
	// does not offer it; the key set is published all the same, for the
	// tokens of MCP calls.
	Enabled bool
	// Holders, when set, reads which approvers have an enrolled,
	// unrevoked key, so that a pending answer names who can approve now
	// apart from who must enroll a key first; nil: all are named.
	Holders func(context.Context) (map[string]bool, error)
	Logger  *slog.Logger
	Now     func() time.Time
}

// Server serves the CIBA endpoints, discovery and the key set.
type Server struct {
	opts      Options
	log       *slog.Logger
	upstreams atomic.Pointer[[]config.Upstream] // Options.Upstreams, until SetUpstreams
	dir       atomic.Pointer[directory]         // Options.Agents and Approvers, until SetPeople
}

// directory is who may ask (the agents, by their tokens' hashes) and whom
// a login_hint may name, swapped whole by a reload: an agent removed from
// mcp.yaml must lose the backchannel when it loses the MCP listener.
type directory struct {
	clients   []client
	approvers []config.Approver
}

func newDirectory(agents []config.Agent, approvers []config.Approver) (*directory, error) {
	d := &directory{approvers: approvers}
	for _, a := range agents {
		h, err := hex.DecodeString(a.TokenSHA256)
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("ciba: agent %s: token_sha256 is not 64 hex digits", a.ID)
		}
		d.clients = append(d.clients, client{a.ID, h})
	}
	return d, nil
}

// SetPeople puts the agents and approvers of a reloaded configuration in
// force for the requests that come next; on an error nothing changes.
func (s *Server) SetPeople(agents []config.Agent, approvers []config.Approver) error {
	d, err := newDirectory(agents, approvers)
	if err != nil {
		return err
	}
	s.dir.Store(d)
	return nil
}

// SetUpstreams puts the upstreams of a reloaded configuration in force for
// the requests that come next.
func (s *Server) SetUpstreams(ups []config.Upstream) { s.upstreams.Store(&ups) }

type client struct {
	id   string
	hash []byte // SHA-256 of the token
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Guard == nil || opts.Keys == nil {
		return nil, errors.New("ciba: a guard and a key set are required")
	}
	u, err := url.Parse(opts.Issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ciba: issuer %q is not an http(s) URL without query or fragment", opts.Issuer)
	}
	opts.Issuer = strings.TrimRight(opts.Issuer, "/")
	if err := authzdetails.CheckSchemas(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger}
	s.upstreams.Store(&opts.Upstreams)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.SetPeople(opts.Agents, opts.Approvers); err != nil {
		return nil, err
	}
	return s, nil
}

// Routes are the handlers by path, for the agent listener's mux. They do
// their own client authentication: discovery and the key set are public.
func (s *Server) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		PathAuthorize: http.HandlerFunc(s.authorize),
		PathToken:     http.HandlerFunc(s.token),
		PathDiscovery: http.HandlerFunc(s.discovery),
		PathJWKS:      http.HandlerFunc(s.jwks),
	}
}

// authorize is the backchannel authentication endpoint.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	agent, form, e := s.begin(w, r)
	if e != nil {
		if agent != "" {
			s.opts.Guard.RecordRejected(r.Context(), agent, Tool, e.Error())
		}
		e.write(w)
		return
	}
	reject := func(e *Error) {
		s.opts.Guard.RecordRejected(r.Context(), agent, Tool, e.Error())
		e.write(w)
	}
	if !s.opts.Enabled {
		reject(authError(CodeUnauthorizedClient, "CIBA is off on this server: its policy, tools.ciba, is not configured"))
		return
	}
	req, e := parseAuthRequest(form)
	if e != nil {
		reject(e)
		return
	}
	named := resolveHint(req.LoginHint, s.dir.Load().approvers)
	if len(named) == 0 {
		reject(authError(CodeUnknownUserID, "login_hint %s names no approver and no role with approvers", quote(req.LoginHint)))
		return
	}
	actions, e := s.judge(r.Context(), req)
	if e != nil {
		reject(e)
		return
	}
	summary := fmt.Sprintf("%s asks for a countersignature over CIBA", agent)
	if req.BindingMessage != "" {
		summary = fmt.Sprintf("%s asks: %q", agent, req.BindingMessage)
	}
	rq, err := s.opts.Guard.Raise(r.Context(), guard.Backchannel{
		Tool: Tool, Agent: agent, Args: req.args(), Details: req.Details, Summary: summary,
		Timeout:   req.RequestedExpiry,
		Approvers: narrow(req.LoginHint, named),
		Actions:   actions,
	})
	var ce *Error
	var refusal *guard.Refusal
	var frozen *freeze.FrozenError
	switch {
	case errors.As(err, &ce):
		ce.write(w)
		return
	case errors.As(err, &refusal):
		authError(CodeAccessDenied, "%s", refusal.Reason).write(w)
		return
	case errors.As(err, &frozen):
		authError(CodeAccessDenied, "%v", frozen).write(w)
		return
	case err != nil:
		s.log.Error("ciba: cannot raise the request", "agent", agent, "err", err)
		authError(CodeServerError, "cannot raise the request: %v", err).write(w)
		return
	}
	now := s.opts.Now()
	writeJSON(w, http.StatusOK, map[string]any{
		"auth_req_id": rq.ID,
		"expires_in":  int(math.Max(0, math.Floor(rq.ExpiresAt.Sub(now).Seconds()))),
		"interval":    seconds(rq.Interval),
	})
}

// narrow keeps, of the approvers policy allows, those login_hint names,
// and refuses a hint that leaves too few for the quorum.
func narrow(hint string, named []string) func(allowed []string, quorum int) ([]string, error) {
	return func(allowed []string, quorum int) ([]string, error) {
		var out []string
		for _, a := range allowed {
			if slices.Contains(named, a) {
				out = append(out, a)
			}
		}
		if len(out) == 0 {
			return nil, authError(CodeAccessDenied, "login_hint %s names no approver that policy allows for %s requests", quote(hint), Tool)
		}
		if len(out) < quorum {
			return nil, authError(CodeAccessDenied, "policy needs %d approvers for this request, and login_hint %s names %d of those it allows; name a role", quorum, quote(hint), len(out))
		}
		return out, nil
	}
}

// token is the token endpoint, for the CIBA grant only.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	agent, form, e := s.begin(w, r)
	if e != nil {
		if agent != "" {
			s.opts.Guard.RecordRejected(r.Context(), agent, Tool, "token endpoint: "+e.Error())
		}
		e.write(w)
		return
	}
	bad := func(e *Error) {
		s.opts.Guard.RecordRejected(r.Context(), agent, Tool, "token endpoint: "+e.Error())
		e.write(w)
	}
	switch gt := form.Get("grant_type"); {
	case gt == "":
		bad(tokenError(CodeInvalidRequest, "grant_type is required: %s", GrantType))
		return
	case gt != GrantType:
		bad(tokenError(CodeUnsupportedGrantType, "grant_type %s is not supported; this endpoint serves %s", quote(gt), GrantType))
		return
	}
	id := form.Get("auth_req_id")
	if id == "" {
		bad(tokenError(CodeInvalidRequest, "auth_req_id is required"))
		return
	}
	ps, tok, err := s.opts.Guard.Redeem(r.Context(), Tool, id, agent)
	if errors.Is(err, approval.ErrNotFound) {
		tokenError(CodeInvalidGrant, "auth_req_id is unknown, or was not issued to this client").write(w)
		return
	}
	var frozen *freeze.FrozenError
	if errors.As(err, &frozen) {
		// Approved before its agent was frozen: the token is never issued.
		tokenError(CodeAccessDenied, "%v", frozen).write(w)
		return
	}
	if err != nil {
		s.log.Error("ciba: cannot redeem", "auth_req_id", id, "agent", agent, "err", err)
		tokenError(CodeServerError, "%v", err).write(w)
		return
	}
	req := ps.Request
	switch ps.Status {
	case approval.PollPending:
		tokenError(CodeAuthorizationPending, "waiting for %s", s.waitingFor(r.Context(), req)).write(w)
		return
	case approval.PollSlowDown:
		e := tokenError(CodeSlowDown, "polled sooner than the interval; it is now %ds", seconds(req.Interval))
		e.Interval = seconds(req.Interval)
		e.write(w)
		return
	case approval.PollExpired:
		tokenError(CodeExpiredToken, "the request expired at %s without a decision", req.ExpiresAt.UTC().Format(time.RFC3339)).write(w)
		return
	case approval.PollDenied:
		tokenError(CodeAccessDenied, "%s", guard.Outcome(req)).write(w)
		return
	case approval.PollFailed:
		if !s.opts.Now().Before(req.ExpiresAt) {
			tokenError(CodeExpiredToken, "the request expired at %s before it was exchanged", req.ExpiresAt.UTC().Format(time.RFC3339)).write(w)
			return
		}
		tokenError(CodeInvalidGrant, "auth_req_id could not be exchanged for its approval token").write(w)
		return
	case approval.PollApproved:
	default: // executed
		tokenError(CodeInvalidGrant, "auth_req_id was already exchanged for its approval token").write(w)
		return
	}
	c, err := token.Verify(tok, s.opts.Keys.JWKS(), token.VerifyOptions{Issuer: s.opts.Issuer, Audience: agent, Now: s.opts.Now})
	if err != nil {
		s.log.Error("ciba: the approval token does not verify", "auth_req_id", id, "err", err)
		tokenError(CodeServerError, "the approval token does not verify: %v", err).write(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"approval_token":        tok,
		"access_token":          tok,
		"token_type":            "N_A",
		"expires_in":            c.Expiry - s.opts.Now().Unix(),
		"authorization_details": c.AuthorizationDetails,
	})
}

// begin does what both POST endpoints do first: method, browser headers,
// client authentication, then the form. agent is "" when the client is not
// authenticated.
func (s *Server) begin(w http.ResponseWriter, r *http.Request) (agent string, form url.Values, e *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e := authError(CodeInvalidRequest, "use POST")
		e.Status = http.StatusMethodNotAllowed
		return "", nil, e
	}
	if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != "" {
		return "", nil, authError(CodeInvalidRequest, "browsers may not call the backchannel: CIBA clients are servers")
	}
	agent, e = s.authenticate(r)
	if e != nil {
		s.log.Warn("ciba: client authentication failed", "remote", r.RemoteAddr, "path", r.URL.Path, "err", e.Description)
		return "", nil, e
	}
	form, e = readForm(r)
	if e != nil {
		return agent, nil, e
	}
	if form.Has("client_secret") {
		return agent, nil, authError(CodeInvalidClient, "client_secret in the body is not supported: use HTTP Basic, or the agent token as a bearer token")
	}
	if id := form.Get("client_id"); id != "" && len(s.dir.Load().clients) > 0 && id != agent {
		return agent, nil, authError(CodeInvalidClient, "client_id does not match the authenticated client")
	}
	return agent, form, nil
}

// authenticate returns the agent id of the client.
func (s *Server) authenticate(r *http.Request) (string, *Error) {
	clients := s.dir.Load().clients
	if len(clients) == 0 {
		if !fromLoopback(r.RemoteAddr) {
			return "", authError(CodeInvalidClient, "anonymous clients are allowed from loopback only")
		}
		return "anonymous", nil
	}
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	cred = strings.TrimSpace(cred)
	var id, secret string
	switch strings.ToLower(scheme) {
	case "bearer":
		secret = cred
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", authError(CodeInvalidClient, "malformed HTTP Basic credentials")
		}
		u, p, ok := strings.Cut(string(raw), ":")
		// RFC 6749 section 2.3.1: both are form-encoded first.
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		secret, err2 = url.QueryUnescape(p)
		if !ok || err1 != nil || err2 != nil || id == "" {
			return "", authError(CodeInvalidClient, "malformed HTTP Basic credentials")
		}
	default:
		return "", authError(CodeInvalidClient, "client authentication is required: Authorization: Bearer <agent token>, or HTTP Basic client_id:client_secret")
	}
	sum := sha256.Sum256([]byte(secret))
	match := ""
	for _, c := range clients {
		// Compare every hash, whichever matches, in constant time.
		if subtle.ConstantTimeCompare(sum[:], c.hash) == 1 && (id == "" || id == c.id) {
			match = c.id
		}
	}
	if match == "" {
		return "", authError(CodeInvalidClient, "unknown client or wrong secret")
	}
	return match, nil
}

func fromLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func seconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// waitingFor names whom a pending request waits for: those who can
// approve now, and apart from them those who must enroll a key first,
// since a client that sends its user to them would wait in vain.
func (s *Server) waitingFor(ctx context.Context, req *approval.Request) string {
	var holders map[string]bool
	if s.opts.Holders != nil {
		h, err := s.opts.Holders(ctx)
		if err != nil {
			s.log.Debug("ciba: cannot read which approvers have a key", "err", err)
		}
		holders = h
	}
	now, enroll := ceremony.Split(holders, req.Approvers, req.ApproverNames)
	switch {
	case len(now) == 0:
		return strings.Join(enroll, " or ") + " (none can approve yet: each must first enroll a security key)"
	case len(enroll) > 0:
		return strings.Join(now, " or ") + " (can approve now; still to enroll a security key: " + strings.Join(enroll, ", ") + ")"
	}
	return strings.Join(now, " or ")
}
