package ciba

// These tests walk every CIBA path with a plain net/http client against a
// real listener, over the real guard, policy, approval service, audit log
// and token signer. Approvers tap software security keys.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jwxjwk "github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

const pageOrigin = "http://localhost:8710"

var people = []config.Approver{
	{ID: "alice", Name: "Alice", Roles: []string{"treasury", "ops"}},
	{ID: "bob", Name: "Bob", Roles: []string{"treasury"}},
	{ID: "carol", Name: "Carol", Roles: []string{"support"}},
}

// The policy of these tests: one of alice or bob; two of them, with user
// verification, for payments over 250,000; never from the agent "intern".
var cibaPolicy = config.Tool{
	Level: "high", Approvers: []string{"role:treasury"},
	Rules: []config.Rule{
		{Name: "large-payment", Level: "critical", When: `args.authorization_details.exists(d, d.type == 'payment_initiation' && double(d.instructedAmount.amount) > 250000.0)`},
		{Name: "no-interns", Level: "deny", When: `agent == 'intern'`},
	},
}

type stack struct {
	url    string
	svc    *approval.Service
	log    *audit.Log
	signer *token.Signer
	keys   map[string]*approvaltest.SoftKey
	tokens map[string]string // agent id -> bearer token
	// restart, where set, starts the server again on the same database.
	restart func()
	// guard, where set, is the running server's guard.
	guard func() *guard.Guard
	// server, where set, is the running CIBA server.
	server func() *Server
}

type stackOptions struct {
	agents  bool // configure agents ci-bot, other-bot and intern; else anonymous
	enabled bool // tools.ciba configured
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	db, err := store.Connect(ctx, filepath.Join(t.TempDir(), store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, serverKey, _ := ed25519.GenerateKey(rand.Reader)
	log, err := audit.Open(ctx, db.DB, serverKey, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	var approvers []approval.Approver
	for _, a := range people {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	svc, err := approval.New(ctx, db, log, approval.Options{RPID: "localhost", Origins: []string{pageOrigin}, Approvers: approvers, PollInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	policy := map[string]config.Tool{}
	if o.enabled {
		policy[Tool] = cibaPolicy
	}
	pol, err := authz.Compile(policy, people, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{svc: svc, log: log, keys: map[string]*approvaltest.SoftKey{}, tokens: map[string]string{}}
	var agents []config.Agent
	if o.agents {
		for _, id := range []string{"ci-bot", "other-bot", "intern"} {
			tok := "token-of-" + id
			sum := sha256.Sum256([]byte(tok))
			agents = append(agents, config.Agent{ID: id, TokenSHA256: hex.EncodeToString(sum[:])})
			s.tokens[id] = tok
		}
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	tk, _ := token.DeriveKey(serverKey)
	if s.signer, err = token.NewSigner(tk, srv.URL, token.SignerOptions{}); err != nil {
		t.Fatal(err)
	}
	g := guard.New(guard.Options{Catalog: tools.NewCatalog(), Policy: pol, Audit: log, Requests: svc, Runs: svc, Recovery: svc, Tasks: svc, Evidence: svc, Tokens: s.signer, Tools: policy})
	t.Cleanup(g.Close)
	c, err := New(Options{Issuer: srv.URL, Guard: g, Keys: s.signer, Agents: agents, Approvers: people, Enabled: o.enabled,
		Holders: func(ctx context.Context) (map[string]bool, error) {
			keys, err := svc.Credentials(ctx)
			return ceremony.Holders(keys), err
		}})
	if err != nil {
		t.Fatal(err)
	}
	for p, h := range c.Routes() {
		mux.Handle(p, h)
	}
	s.server = func() *Server { return c }
	for _, a := range []string{"alice", "bob"} {
		s.enroll(t, a)
	}
	return s
}

func (s *stack) enroll(t *testing.T, approver string) {
	t.Helper()
	ctx := context.Background()
	key := approvaltest.NewSoftKey(t, "localhost", pageOrigin)
	link, err := s.svc.CreateEnrollment(ctx, approver)
	if err != nil {
		t.Fatal(err)
	}
	tok := link[strings.LastIndex(link, "/")+1:]
	opts, err := s.svc.BeginEnrollment(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.FinishEnrollment(ctx, tok, opts.Ceremony, key.Create(t, opts.PublicKey)); err != nil {
		t.Fatal(err)
	}
	s.keys[approver] = key
}

func (s *stack) tap(t *testing.T, approver, id string, decision vocab.Decision) *approval.Request {
	t.Helper()
	ctx := context.Background()
	opts, err := s.svc.BeginDecision(ctx, id, decision)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.svc.FinishDecision(ctx, id, opts.Ceremony, s.keys[approver].Get(opts.PublicKey.Challenge.String()))
	if err != nil {
		t.Fatalf("%s %s: %v", approver, decision, err)
	}
	return r
}

// response is a decoded JSON answer.
type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (r response) str(k string) string { s, _ := r.body[k].(string); return s }
func (r response) num(k string) int    { f, _ := r.body[k].(float64); return int(f) }

// post sends form to path as agent ("" sends no credentials).
func (s *stack) post(t *testing.T, path, agent string, form url.Values, edit ...func(*http.Request)) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if agent != "" {
		req.Header.Set("Authorization", "Bearer "+s.tokens[agent])
	}
	for _, f := range edit {
		f(req)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := response{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(b, &out.body); err != nil {
		t.Fatalf("%s %s: status %d, body is not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return out
}

const deployDetails = `[{"type":"deployment","actions":["deploy"],"service":"api","version":"1.4.2","environment":"production"}]`

func authForm(edit ...func(url.Values)) url.Values {
	f := url.Values{
		"scope":                 {"openid"},
		"login_hint":            {"alice"},
		"binding_message":       {"Release api 1.4.2"},
		"authorization_details": {deployDetails},
	}
	for _, e := range edit {
		e(f)
	}
	return f
}

func set(k, v string) func(url.Values) { return func(f url.Values) { f.Set(k, v) } }
func del(k string) func(url.Values)    { return func(f url.Values) { f.Del(k) } }

func pollForm(id string) url.Values {
	return url.Values{"grant_type": {GrantType}, "auth_req_id": {id}}
}

func (s *stack) entries(t *testing.T) []audit.Entry {
	t.Helper()
	all, err := s.log.Since(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func TestDiscoveryAndKeySetArePublic(t *testing.T) {
	s := newStack(t, stackOptions{agents: true, enabled: true})
	get := func(path string) response {
		req, _ := http.NewRequest(http.MethodGet, s.url+path, nil)
		return do(t, req)
	}
	m := get(PathDiscovery)
	if m.status != 200 || m.str("issuer") != s.url || m.str("backchannel_authentication_endpoint") != s.url+PathAuthorize ||
		m.str("token_endpoint") != s.url+PathToken || m.str("jwks_uri") != s.url+PathJWKS {
		t.Fatalf("discovery %d %v", m.status, m.body)
	}
	modes, _ := json.Marshal(m.body["backchannel_token_delivery_modes_supported"])
	types, _ := json.Marshal(m.body["authorization_details_types_supported"])
	grants, _ := json.Marshal(m.body["grant_types_supported"])
	if string(modes) != `["poll"]` || string(types) != `["deployment","mcp_tool_call","payment_initiation","secret_access"]` || string(grants) != `["`+GrantType+`"]` {
		t.Errorf("modes %s, types %s, grants %s", modes, types, grants)
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+PathJWKS, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	set, err := token.ParseKeySet(raw)
	if err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != s.signer.KeyID() {
		t.Fatalf("jwks %s: %v", raw, err)
	}

	off := newStack(t, stackOptions{agents: true})
	req, _ = http.NewRequest(http.MethodGet, off.url+PathDiscovery, nil)
	if m := do(t, req); m.body["backchannel_authentication_endpoint"] != nil {
		t.Errorf("discovery of a server without tools.ciba offers the backchannel: %v", m.body)
	}
	if r := off.post(t, PathAuthorize, "ci-bot", authForm()); r.status != 400 || r.str("error") != CodeUnauthorizedClient {
		t.Errorf("backchannel without tools.ciba: %d %v", r.status, r.body)
	}
}

// Every error of the backchannel authentication endpoint, each where CIBA
// uses it, and each recorded once the client is known.
func TestAuthenticationRequestErrors(t *testing.T) {
	s := newStack(t, stackOptions{agents: true, enabled: true})
	basic := func(id, secret string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Del("Authorization")
			r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
	}
	header := func(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }
	cases := []struct {
		name   string
		agent  string
		form   url.Values
		edit   []func(*http.Request)
		status int
		code   string
	}{
		{"no credentials", "", authForm(), nil, 401, CodeInvalidClient},
		{"wrong bearer", "", authForm(), []func(*http.Request){header("Authorization", "Bearer nope")}, 401, CodeInvalidClient},
		{"basic, wrong secret", "", authForm(), []func(*http.Request){basic("ci-bot", "nope")}, 401, CodeInvalidClient},
		{"basic, another agent's secret", "", authForm(), []func(*http.Request){basic("ci-bot", "token-of-other-bot")}, 401, CodeInvalidClient},
		{"secret in the body", "ci-bot", authForm(set("client_secret", "token-of-ci-bot")), nil, 401, CodeInvalidClient},
		{"client_id of another", "ci-bot", authForm(set("client_id", "other-bot")), nil, 401, CodeInvalidClient},
		{"JSON body", "ci-bot", authForm(), []func(*http.Request){header("Content-Type", "application/json")}, 400, CodeInvalidRequest},
		{"parameters in the URL", "ci-bot", authForm(), []func(*http.Request){func(r *http.Request) { r.URL.RawQuery = "scope=openid" }}, 400, CodeInvalidRequest},
		{"from a browser", "ci-bot", authForm(), []func(*http.Request){header("Origin", "https://evil.example")}, 400, CodeInvalidRequest},
		{"parameter twice", "ci-bot", authForm(func(f url.Values) { f.Add("login_hint", "bob") }), nil, 400, CodeInvalidRequest},
		{"no scope", "ci-bot", authForm(del("scope")), nil, 400, CodeInvalidRequest},
		{"scope without openid", "ci-bot", authForm(set("scope", "profile")), nil, 400, CodeInvalidScope},
		{"unknown scope", "ci-bot", authForm(set("scope", "openid payments")), nil, 400, CodeInvalidScope},
		{"no login_hint", "ci-bot", authForm(del("login_hint")), nil, 400, CodeInvalidRequest},
		{"login_hint_token", "ci-bot", authForm(set("login_hint_token", "x")), nil, 400, CodeInvalidRequest},
		{"id_token_hint", "ci-bot", authForm(set("id_token_hint", "x")), nil, 400, CodeInvalidRequest},
		{"signed request", "ci-bot", authForm(set("request", "eyJ...")), nil, 400, CodeInvalidRequest},
		{"user_code", "ci-bot", authForm(set("user_code", "1234")), nil, 400, CodeInvalidRequest},
		{"unknown approver", "ci-bot", authForm(set("login_hint", "mallory")), nil, 400, CodeUnknownUserID},
		{"unknown role", "ci-bot", authForm(set("login_hint", "role:nobody")), nil, 400, CodeUnknownUserID},
		{"approver policy does not allow", "ci-bot", authForm(set("login_hint", "carol")), nil, 403, CodeAccessDenied},
		{"binding message on two lines", "ci-bot", authForm(set("binding_message", "Release\nand approve all")), nil, 400, CodeInvalidBindingMsg},
		{"binding message with bidi override", "ci-bot", authForm(set("binding_message", "Pay \u202e01$")), nil, 400, CodeInvalidBindingMsg},
		{"binding message too long", "ci-bot", authForm(set("binding_message", strings.Repeat("x", 129))), nil, 400, CodeInvalidBindingMsg},
		{"expiry not a number", "ci-bot", authForm(set("requested_expiry", "soon")), nil, 400, CodeInvalidRequest},
		{"expiry zero", "ci-bot", authForm(set("requested_expiry", "0")), nil, 400, CodeInvalidRequest},
		{"expiry negative", "ci-bot", authForm(set("requested_expiry", "-5")), nil, 400, CodeInvalidRequest},
		{"expiry huge", "ci-bot", authForm(set("requested_expiry", "99999999999999999")), nil, 400, CodeInvalidRequest},
		{"no details", "ci-bot", authForm(del("authorization_details")), nil, 400, CodeInvalidRequest},
		{"details not JSON", "ci-bot", authForm(set("authorization_details", "[{")), nil, 400, CodeInvalidAuthzDetails},
		{"details an object", "ci-bot", authForm(set("authorization_details", `{"type":"deployment"}`)), nil, 400, CodeInvalidAuthzDetails},
		{"details empty", "ci-bot", authForm(set("authorization_details", `[]`)), nil, 400, CodeInvalidAuthzDetails},
		{"unknown type", "ci-bot", authForm(set("authorization_details", `[{"type":"account_information"}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"unknown field", "ci-bot", authForm(set("authorization_details", `[{"type":"deployment","service":"api","version":"1","environment":"prod","force":true}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"missing field", "ci-bot", authForm(set("authorization_details", `[{"type":"deployment","service":"api","version":"1"}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"member twice", "ci-bot", authForm(set("authorization_details", `[{"type":"deployment","service":"api","service":"db","version":"1","environment":"prod"}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"amount a number", "ci-bot", authForm(set("authorization_details", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":100},"creditorName":"Acme"}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"two account ids", "ci-bot", authForm(set("authorization_details", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"1.00"},"creditorName":"Acme","creditorAccount":{"iban":"DE89370400440532013000","id":"x"}}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"invisible character", "ci-bot", authForm(set("authorization_details", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"1.00"},"creditorName":"Acme\u200b"}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"too many arguments shown", "ci-bot", authForm(set("authorization_details", `[{"type":"mcp_tool_call","server":"files","tool":"write","arguments":{"a":[`+strings.Repeat("1,", 70)+`1]}}]`)), nil, 400, CodeInvalidAuthzDetails},
		{"denied by a policy rule", "intern", authForm(), nil, 403, CodeAccessDenied},
		{"quorum of two, one named", "ci-bot", authForm(set("authorization_details", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X"}]`)), nil, 403, CodeAccessDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.entries(t))
			r := s.post(t, PathAuthorize, tc.agent, tc.form, tc.edit...)
			if r.status != tc.status || r.str("error") != tc.code {
				t.Fatalf("status %d %v, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if d := r.str("error_description"); d == "" || strings.ContainsAny(d, "\"\\") {
				t.Errorf("error_description %q", d)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
			}
			if tc.status == 401 && len(r.header.Values("WWW-Authenticate")) == 0 {
				t.Error("401 without WWW-Authenticate")
			}
			added := s.entries(t)[before:]
			if tc.agent == "" || tc.name == "from a browser" {
				if len(added) != 0 {
					t.Errorf("unauthenticated request recorded: %+v", added)
				}
				return
			}
			if len(added) != 1 || added[0].Tool != Tool || added[0].Agent != tc.agent ||
				(added[0].Kind != vocab.KindCallRejected && added[0].Kind != vocab.KindCallDenied) {
				t.Errorf("recorded %+v, want one call.rejected or call.denied by %s", added, tc.agent)
			}
		})
	}
	// A role names enough approvers for the quorum.
	r := s.post(t, PathAuthorize, "ci-bot", authForm(set("login_hint", "role:treasury"),
		set("authorization_details", `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X"}]`)))
	if r.status != 200 || r.str("auth_req_id") == "" {
		t.Fatalf("critical request naming a role: %d %v", r.status, r.body)
	}
	req, err := s.svc.Get(context.Background(), r.str("auth_req_id"))
	if err != nil || req.Level != "critical" || req.Quorum != 2 || strings.Join(req.Approvers, ",") != "alice,bob" {
		t.Fatalf("critical request %+v %v", req, err)
	}
	// HTTP Basic works as well as the bearer token.
	r = s.post(t, PathAuthorize, "", authForm(), basic("ci-bot", "token-of-ci-bot"))
	if r.status != 200 {
		t.Fatalf("basic auth: %d %v", r.status, r.body)
	}
	if got := s.post(t, PathAuthorize, "ci-bot", authForm(), func(r *http.Request) { r.Method = http.MethodGet }); got.status != 405 {
		t.Errorf("GET: %d", got.status)
	}
}

// The token endpoint, from the first poll to the token, and each way a
// request can end.
func TestTokenEndpointWalk(t *testing.T) {
	s := newStack(t, stackOptions{agents: true, enabled: true})
	start := s.post(t, PathAuthorize, "ci-bot", authForm())
	if start.status != 200 {
		t.Fatalf("bc-authorize: %d %v", start.status, start.body)
	}
	id := start.str("auth_req_id")
	if start.num("expires_in") < 290 || start.num("expires_in") > 300 || start.num("interval") != 1 || len(start.body) != 3 {
		t.Fatalf("bc-authorize answer %v", start.body)
	}
	for _, tc := range []struct {
		name, agent string
		form        url.Values
		code        string
	}{
		{"no grant_type", "ci-bot", url.Values{"auth_req_id": {id}}, CodeInvalidRequest},
		{"another grant", "ci-bot", url.Values{"grant_type": {"client_credentials"}, "auth_req_id": {id}}, CodeUnsupportedGrantType},
		{"no auth_req_id", "ci-bot", url.Values{"grant_type": {GrantType}}, CodeInvalidRequest},
		{"unknown auth_req_id", "ci-bot", pollForm("00000000-0000-4000-8000-000000000000"), CodeInvalidGrant},
		{"another client's request", "other-bot", pollForm(id), CodeInvalidGrant},
	} {
		if r := s.post(t, PathToken, tc.agent, tc.form); r.status != 400 || r.str("error") != tc.code {
			t.Errorf("%s: %d %v, want 400 %s", tc.name, r.status, r.body, tc.code)
		}
	}
	if r := s.post(t, PathToken, "", pollForm(id)); r.status != 401 || r.str("error") != CodeInvalidClient {
		t.Errorf("unauthenticated poll: %d %v", r.status, r.body)
	}

	// Polling faster than the interval gets slow_down, and each one adds
	// five seconds to the interval the client must keep.
	if r := s.post(t, PathToken, "ci-bot", pollForm(id)); r.str("error") != CodeAuthorizationPending {
		t.Fatalf("first poll: %v", r.body)
	}
	for _, want := range []int{6, 11} {
		r := s.post(t, PathToken, "ci-bot", pollForm(id))
		if r.status != 400 || r.str("error") != CodeSlowDown || r.num("interval") != want {
			t.Fatalf("fast poll: %d %v, want slow_down with interval %d", r.status, r.body, want)
		}
	}

	s.tap(t, "alice", id, vocab.Approve)
	r := s.post(t, PathToken, "ci-bot", pollForm(id))
	if r.status != 200 || r.str("token_type") != "N_A" || r.str("approval_token") == "" || r.str("access_token") != r.str("approval_token") ||
		r.num("expires_in") < 290 || r.num("expires_in") > 300 || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token response %d %v", r.status, r.body)
	}
	details, _ := json.Marshal(r.body["authorization_details"])
	if string(details) != `[{"actions":["deploy"],"environment":"production","service":"api","type":"deployment","version":"1.4.2"}]` {
		t.Errorf("granted authorization_details %s", details)
	}
	tok := r.str("approval_token")
	if r := s.post(t, PathToken, "ci-bot", pollForm(id)); r.str("error") != CodeInvalidGrant {
		t.Errorf("second exchange: %v", r.body)
	}
	checkToken(t, s, tok, id)

	// Denied.
	denied := s.post(t, PathAuthorize, "ci-bot", authForm(set("login_hint", "role:treasury"))).str("auth_req_id")
	s.tap(t, "bob", denied, vocab.Deny)
	if r := s.post(t, PathToken, "ci-bot", pollForm(denied)); r.status != 400 || r.str("error") != CodeAccessDenied || !strings.Contains(r.str("error_description"), "bob") {
		t.Errorf("denied: %d %v", r.status, r.body)
	}
	// Expired: the client asked for one second and nobody decided; or it
	// asked for two, was approved, and came for the token too late.
	short := s.post(t, PathAuthorize, "ci-bot", authForm(set("requested_expiry", "1")))
	if short.num("expires_in") > 1 {
		t.Errorf("requested_expiry 1 gave expires_in %v", short.body)
	}
	late := s.post(t, PathAuthorize, "ci-bot", authForm(set("requested_expiry", "2")))
	lateReq := s.tap(t, "alice", late.str("auth_req_id"), vocab.Approve)
	time.Sleep(time.Until(lateReq.ExpiresAt) + 100*time.Millisecond)
	for _, id := range []string{short.str("auth_req_id"), late.str("auth_req_id"), late.str("auth_req_id")} {
		if r := s.post(t, PathToken, "ci-bot", pollForm(id)); r.str("error") != CodeExpiredToken {
			t.Errorf("expired: %v", r.body)
		}
	}
	// A longer expiry than policy allows is cut to the policy's.
	long := s.post(t, PathAuthorize, "ci-bot", authForm(set("requested_expiry", "86400")))
	if long.num("expires_in") > 300 {
		t.Errorf("requested_expiry beyond policy: %v", long.body)
	}
}

// checkToken verifies an approval token with a second JOSE implementation
// (lestrrat-go/jwx) against the key set as served, and matches it to the
// audit log: its digest is the challenge recomputed from the
// approval.approved entry, its assertion hash that of the assertion entry.
func checkToken(t *testing.T, s *stack, tok, id string) {
	t.Helper()
	resp, err := http.Get(s.url + PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	set, err := jwxjwk.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwxjwt.Parse([]byte(tok), jwxjwt.WithKeySet(set), jwxjwt.WithIssuer(s.url), jwxjwt.WithAudience("ci-bot"))
	if err != nil {
		t.Fatalf("jwx: %v", err)
	}
	var got struct {
		AuthReqID string `json:"urn:openid:params:jwt:claim:auth_req_id"`
		Digest    string `json:"digest"`
		Approvers []token.Approver
	}
	var approvers []any
	for name, dst := range map[string]any{token.AuthReqIDClaim: &got.AuthReqID, "digest": &got.Digest, "approvers": &approvers} {
		if err := parsed.Get(name, dst); err != nil {
			t.Fatalf("claim %s: %v", name, err)
		}
	}
	b, _ := json.Marshal(approvers)
	json.Unmarshal(b, &got.Approvers)
	iat, _ := parsed.IssuedAt()
	exp, _ := parsed.Expiration()
	if got.AuthReqID != id || exp.Sub(iat) > 5*time.Minute || len(got.Approvers) != 1 || got.Approvers[0].ID != "alice" {
		t.Fatalf("claims %+v, iat %v exp %v", got, iat, exp)
	}

	var approved, assertion audit.Entry
	for _, e := range s.entries(t) {
		if e.RequestID == id && e.Kind == vocab.KindApprovalApproved {
			approved = e
		}
		if e.RequestID == id && e.Kind == vocab.KindApprovalAssertion {
			assertion = e
		}
	}
	args, _ := hex.DecodeString(approved.ArgsSHA256)
	nonce, _ := base64.RawURLEncoding.DecodeString(approved.Nonce)
	expires, _ := time.Parse(time.RFC3339, approved.ExpiresAt)
	want, err := digest.Compute(digest.Action{
		RequestID: id, Decision: vocab.Approve, AuthorizationDetails: approved.AuthorizationDetails,
		Tool: approved.Tool, ArgsSHA256: [32]byte(args), Display: approved.Display, Nonce: nonce, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != hex.EncodeToString(want[:]) {
		t.Errorf("token digest %s, recomputed from the audit log %x", got.Digest, want)
	}
	dec := func(v string) []byte { b, _ := base64.RawURLEncoding.DecodeString(v); return b }
	a := digest.AssertionSHA256(dec(assertion.AuthenticatorData), dec(assertion.ClientDataJSON), dec(assertion.Signature))
	if got.Approvers[0].AssertionSHA256 != hex.EncodeToString(a[:]) {
		t.Errorf("assertion_sha256 %s, the audit entry's %x", got.Approvers[0].AssertionSHA256, a)
	}

	// Any claim altered, or the signature, and jwx refuses it too.
	parts := strings.Split(tok, ".")
	payload := map[string]any{}
	b, _ = base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(b, &payload)
	for claim := range payload {
		p := map[string]any{}
		for k, v := range payload {
			p[k] = v
		}
		p[claim] = "altered"
		pb, _ := json.Marshal(p)
		forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(pb) + "." + parts[2]
		if _, err := jwxjwt.Parse([]byte(forged), jwxjwt.WithKeySet(set)); err == nil {
			t.Errorf("jwx accepted the token with %s altered", claim)
		}
		if _, err := token.Verify(forged, s.signer.JWKS(), token.VerifyOptions{}); err == nil {
			t.Errorf("token.Verify accepted the token with %s altered", claim)
		}
	}
	sig := dec(parts[2])
	sig[len(sig)-1] ^= 0x80
	if _, err := jwxjwt.Parse([]byte(parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig)), jwxjwt.WithKeySet(set)); err == nil {
		t.Error("jwx accepted an altered signature")
	}
	if !slices.Contains(parsed.Keys(), "approvers") {
		t.Error("no approvers claim")
	}
}

// With no agents configured, anonymous clients from loopback may use the
// backchannel, as agents may use MCP.
func TestAnonymousFromLoopback(t *testing.T) {
	s := newStack(t, stackOptions{enabled: true})
	r := s.post(t, PathAuthorize, "", authForm())
	if r.status != 200 {
		t.Fatalf("anonymous: %d %v", r.status, r.body)
	}
	s.tap(t, "alice", r.str("auth_req_id"), vocab.Approve)
	got := s.post(t, PathToken, "", pollForm(r.str("auth_req_id")))
	if got.status != 200 {
		t.Fatalf("anonymous token: %d %v", got.status, got.body)
	}
	if _, err := token.Verify(got.str("approval_token"), s.signer.JWKS(), token.VerifyOptions{Audience: "anonymous"}); err != nil {
		t.Error(err)
	}
	c, _ := New(Options{Issuer: s.url, Guard: &guard.Guard{}, Keys: s.signer})
	if _, e := c.authenticate(&http.Request{RemoteAddr: "192.0.2.7:4000", Header: http.Header{}}); e == nil || e.Code != CodeInvalidClient {
		t.Errorf("anonymous client from 192.0.2.7: %v", e)
	}
}
