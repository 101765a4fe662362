package ciba

// A CIBA request for what a built-in tool does gets the decision that
// tool's call would get, with the server's facts: these tests drive
// /bc-authorize and /token over the shipped configuration's policy, ledger,
// deploy settings and secrets directory.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
)

// newToolStack is a stack over the shipped configuration (edit may change
// it): its tools and policies, with the agent ci-bot.
func newToolStack(t *testing.T, edit func(*config.Config)) *stack {
	t.Helper()
	ctx := context.Background()
	c, err := config.Parse(countersign.DefaultConfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	c.Server.DataDir = t.TempDir()
	c.Deploy.Command[0] = filepath.Join("..", c.Deploy.Command[0])
	c.Secrets.Dir = filepath.Join("..", c.Secrets.Dir)
	if edit != nil {
		edit(c)
	}
	db, err := store.Connect(ctx, filepath.Join(c.Server.DataDir, store.FileName))
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
	for _, a := range c.Approvers {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	svc, err := approval.New(ctx, db, log, approval.Options{RPID: "localhost", Origins: []string{pageOrigin}, Approvers: approvers, PollInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	schemas := map[string]authz.Schema{}
	for name, s := range tools.Schemas(c) {
		schemas[name] = authz.Schema(s)
	}
	pol, err := authz.Compile(c.Tools, c.Approvers, authz.Options{Facts: tools.Facts(), Schemas: schemas, Upstreams: c.Upstreams})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := tools.New(ctx, c, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	s := &stack{svc: svc, log: log, keys: map[string]*approvaltest.SoftKey{}, tokens: map[string]string{"ci-bot": "token-of-ci-bot"}}
	sum := sha256.Sum256([]byte(s.tokens["ci-bot"]))
	agents := []config.Agent{{ID: "ci-bot", TokenSHA256: hex.EncodeToString(sum[:])}}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	tk, _ := token.DeriveKey(serverKey)
	if s.signer, err = token.NewSigner(tk, srv.URL, token.SignerOptions{}); err != nil {
		t.Fatal(err)
	}
	// start builds the guard and the CIBA server, as a process start does,
	// restoring the usage windows from the log and the kept amounts;
	// restart replaces them.
	var current atomic.Pointer[Server]
	var g *guard.Guard
	start := func() {
		amounts, err := store.OpenAmounts(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { amounts.Close() })
		g = guard.New(guard.Options{Catalog: cat, Policy: pol, Audit: log, Requests: svc, Runs: svc, Recovery: svc, Tasks: svc, Evidence: svc, Tokens: s.signer,
			Amounts: amounts, Tools: c.Tools})
		cs, err := New(Options{Issuer: srv.URL, Guard: g, Keys: s.signer, Agents: agents, Approvers: c.Approvers,
			Accounts: c.Ledger.Accounts, Upstreams: c.Upstreams, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		recent := s.entries(t)
		if err := g.RestoreUsage(ctx, recent); err != nil {
			t.Fatal(err)
		}
		if err := cs.RestoreUsage(ctx, recent); err != nil {
			t.Fatal(err)
		}
		current.Store(cs)
	}
	start()
	t.Cleanup(func() { g.Close() })
	s.guard = func() *guard.Guard { return g }
	s.server = current.Load
	s.restart = func() { g.Close(); start() }
	for p := range current.Load().Routes() {
		mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().Routes()[p].ServeHTTP(w, r) }))
	}
	for _, a := range []string{"alice", "bob"} {
		s.enroll(t, a)
	}
	return s
}

// payment is a payment_initiation detail from the operating account.
func payment(amount, payee string, extra string) string {
	return `[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"USD","amount":"` + amount +
		`"},"creditorName":"` + payee + `","debtorAccount":{"id":"operating"}` + extra + `}]`
}

func (s *stack) raise(t *testing.T, details string) response {
	t.Helper()
	return s.post(t, PathAuthorize, "ci-bot", url.Values{
		"scope": {"openid"}, "login_hint": {"role:treasury"}, "authorization_details": {details},
	})
}

func (s *stack) request(t *testing.T, id string) *approval.Request {
	t.Helper()
	r, err := s.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Issue 22, row 7: USD 5,000,000 to a payee the ledger does not know, with
// the client claiming it is known. The transfer policy makes it critical:
// two approvers, each with user verification; one tap issues nothing. The
// page warns of the new counterparty and shows the claim only as the
// client's words.
func TestCIBAPaymentJudgedAsTransfer(t *testing.T) {
	s := newToolStack(t, nil)
	r := s.raise(t, payment("5000000.00", "Shell Company Ltd", `,"counterpartyKnown":true,"newCounterparty":false`))
	if r.status != 200 {
		t.Fatalf("bc-authorize: %d %v", r.status, r.body)
	}
	id := r.str("auth_req_id")
	req := s.request(t, id)
	if req.Level != vocab.LevelCritical || req.Quorum != 2 || strings.Join(req.Approvers, ",") != "alice,bob" {
		t.Fatalf("request level %s quorum %d approvers %v, want critical 2 [alice bob]", req.Level, req.Quorum, req.Approvers)
	}
	lines := strings.Split(req.Display, "\n")
	var server, quoted []string
	for _, l := range lines {
		if strings.HasPrefix(l, authzdetails.AgentPrefix) {
			quoted = append(quoted, l)
		} else {
			server = append(server, l)
		}
	}
	if !strings.Contains(strings.Join(server, "\n"), authzdetails.WarningPrefix+"NEW COUNTERPARTY") {
		t.Errorf("the display does not warn of a new counterparty:\n%s", req.Display)
	}
	if strings.Contains(strings.Join(server, "\n"), "counterpartyKnown") {
		t.Errorf("the client's claim is shown as the server's:\n%s", req.Display)
	}
	if q := strings.Join(quoted, "\n"); !strings.Contains(q, "counterpartyKnown") || !strings.Contains(q, "“true”") ||
		!strings.Contains(q, "newCounterparty") || !strings.Contains(q, "“false”") {
		t.Errorf("the client's claims are not quoted as its words:\n%s", req.Display)
	}
	// The details approved, signed and put in the token state the
	// ledger's facts; the claim is kept apart.
	var details []map[string]any
	json.Unmarshal(req.AuthorizationDetails, &details)
	if details[0]["counterpartyKnown"] != false || details[0]["newCounterparty"] != true {
		t.Errorf("details %s do not state the ledger's facts", req.AuthorizationDetails)
	}
	if c, _ := details[0][authzdetails.ClientClaims].(map[string]any); c["counterpartyKnown"] != true {
		t.Errorf("details %s lose the client's claim", req.AuthorizationDetails)
	}

	// A tap without user verification is refused; one verified tap
	// leaves it pending.
	noUV := *s.keys["alice"]
	noUV.UV = false
	ctx := context.Background()
	opts, err := s.svc.BeginDecision(ctx, id, "approve")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.FinishDecision(ctx, id, opts.Ceremony, noUV.Get(opts.PublicKey.Challenge.String())); err == nil {
		t.Fatal("an approval without user verification counted")
	}
	s.tap(t, "alice", id, "approve")
	if got := s.post(t, PathToken, "ci-bot", pollForm(id)); got.str("error") != CodeAuthorizationPending {
		t.Fatalf("after one tap: %d %v", got.status, got.body)
	}
	if s.tap(t, "bob", id, "approve").State != vocab.StateApproved {
		t.Fatal("two approvers did not approve")
	}
	got := s.post(t, PathToken, "ci-bot", pollForm(id))
	tok := got.str("approval_token")
	if got.status != 200 || tok == "" {
		t.Fatalf("after two taps: %d %v", got.status, got.body)
	}
	c, err := token.Verify(tok, s.signer.JWKS(), token.VerifyOptions{Issuer: s.url, Audience: "ci-bot"})
	if err != nil || len(c.Approvers) != 2 {
		t.Fatalf("token %+v: %v", c, err)
	}
	var inTok []map[string]any
	json.Unmarshal(c.AuthorizationDetails, &inTok)
	if inTok[0]["counterpartyKnown"] != false {
		t.Errorf("the token states the client's claim: %s", c.AuthorizationDetails)
	}
	// The log names the transfer policy's rule that decided.
	var requested audit.Entry
	for _, e := range s.entries(t) {
		if e.Kind == vocab.KindApprovalRequested && e.RequestID == id {
			requested = e
		}
	}
	if !strings.Contains(requested.Rule, "transfer:very-large") || requested.Quorum != 2 || requested.UserVerification != vocab.UVRequired {
		t.Errorf("approval.requested rule %q quorum %d uv %q", requested.Rule, requested.Quorum, requested.UserVerification)
	}
}

// A payment the transfer policy lets run at once still needs the
// tools.ciba floor; one the ledger knows carries no warning and no claim.
func TestCIBASmallPaymentKeepsTheFloor(t *testing.T) {
	s := newToolStack(t, nil)
	r := s.raise(t, payment("12.50", "Acme Supplies", `,"counterpartyKnown":true`))
	if r.status != 200 {
		t.Fatalf("bc-authorize: %d %v", r.status, r.body)
	}
	req := s.request(t, r.str("auth_req_id"))
	if req.Level != vocab.LevelHigh || req.Quorum != 1 {
		t.Fatalf("level %s quorum %d, want the floor: high 1", req.Level, req.Quorum)
	}
	if strings.Contains(req.Display, "NEW COUNTERPARTY") || strings.Contains(req.Display, authzdetails.AgentPrefix) {
		t.Errorf("display of a known payee:\n%s", req.Display)
	}
	// A payee the ledger knows, whose client says it is new: the ledger
	// decides, and the claim is quoted.
	r = s.raise(t, payment("12.50", "Acme Supplies", `,"newCounterparty":true`))
	req = s.request(t, r.str("auth_req_id"))
	if strings.Contains(req.Display, "Warning: NEW COUNTERPARTY") || !strings.Contains(req.Display, "newCounterparty, not what the server found): “true”") {
		t.Errorf("display:\n%s", req.Display)
	}
}

// A payment split into CIBA requests is judged as the sum, as transfers
// are: the usage windows count approved and pending CIBA payments.
func TestCIBAPaymentsCountInTransferWindows(t *testing.T) {
	s := newToolStack(t, nil)
	var last *approval.Request
	for range 5 {
		r := s.raise(t, payment("240000.00", "Acme Supplies", ""))
		if r.status != 200 {
			t.Fatalf("bc-authorize: %d %v", r.status, r.body)
		}
		last = s.request(t, r.str("auth_req_id"))
	}
	if last.Level != vocab.LevelCritical {
		t.Fatalf("the fifth 240,000 in a day is %s, want critical (over 1,000,000 in 24h)", last.Level)
	}
}

func TestCIBADeploymentAndSecretJudgedByTheirTools(t *testing.T) {
	s := newToolStack(t, func(c *config.Config) {
		prod := c.Tools["deploy"]
		prod.Rules = append(prod.Rules, config.Rule{Name: "prod-two", When: "args.environment == 'production'", Level: "critical", Quorum: 2})
		prod.Approvers = []string{"role:ops", "role:treasury"}
		c.Tools["deploy"] = prod
	})
	r := s.raise(t, `[{"type":"deployment","service":"api","version":"1.4.2","environment":"production"}]`)
	if req := s.request(t, r.str("auth_req_id")); r.status != 200 || req.Level != vocab.LevelCritical || req.Quorum != 2 {
		t.Fatalf("production deployment: %d %v", r.status, r.body)
	}
	// An environment the deploy tool does not know cannot dodge its rule.
	r = s.raise(t, `[{"type":"deployment","service":"api","version":"1.4.2","environment":"Production"}]`)
	if r.status != 400 || r.str("error") != CodeInvalidAuthzDetails || !strings.Contains(r.str("error_description"), "deploy") {
		t.Fatalf("unknown environment: %d %v", r.status, r.body)
	}

	// The secrets directory classifies prod-db-password restricted,
	// whatever the client says; the read_secret policy's approvers
	// (role:security) and the floor's must both allow the approver.
	r = s.post(t, PathAuthorize, "ci-bot", url.Values{"scope": {"openid"}, "login_hint": {"alice"},
		"authorization_details": {`[{"type":"secret_access","name":"prod-db-password","classification":"public"}]`}})
	if r.status != 200 {
		t.Fatalf("secret: %d %v", r.status, r.body)
	}
	req := s.request(t, r.str("auth_req_id"))
	if req.Level != vocab.LevelHigh || strings.Join(req.Approvers, ",") != "alice" ||
		!strings.Contains(req.Display, "Classification: restricted") || !strings.Contains(req.Display, "claim classification, not what the server found): “public”") {
		t.Fatalf("restricted secret: level %s approvers %v display:\n%s", req.Level, req.Approvers, req.Display)
	}
	// bob may approve CIBA requests but not secrets.
	r = s.post(t, PathAuthorize, "ci-bot", url.Values{"scope": {"openid"}, "login_hint": {"bob"},
		"authorization_details": {`[{"type":"secret_access","name":"prod-db-password","classification":"restricted"}]`}})
	if r.status != 403 || r.str("error") != CodeAccessDenied {
		t.Fatalf("secret, approver read_secret does not allow: %d %v", r.status, r.body)
	}
}

// A detail whose tool's policy denies it is refused, and recorded with
// the rule that denied it.
func TestCIBADetailOfADeniedToolRefused(t *testing.T) {
	s := newToolStack(t, func(c *config.Config) {
		rs := c.Tools["read_secret"]
		rs.Rules = append(rs.Rules, config.Rule{Name: "never-payments-key", When: "args.name == 'payments-api-key'", Level: "deny"})
		c.Tools["read_secret"] = rs
	})
	before := len(s.entries(t))
	r := s.raise(t, `[{"type":"deployment","service":"api","version":"1.4.2","environment":"staging"},{"type":"secret_access","name":"payments-api-key","classification":"restricted"}]`)
	if r.status != 403 || r.str("error") != CodeAccessDenied || !strings.Contains(r.str("error_description"), "read_secret") {
		t.Fatalf("denied tool: %d %v", r.status, r.body)
	}
	added := s.entries(t)[before:]
	if len(added) != 1 || added[0].Kind != vocab.KindCallDenied || added[0].Decision != string(vocab.LevelDeny) ||
		added[0].Rule != "read_secret:never-payments-key" || added[0].Tool != Tool {
		t.Fatalf("recorded %+v", added)
	}
}

// An mcp_tool_call detail naming an upstream Countersign fronts is judged
// by that tool's policy, or the upstream's default for a tool tools: does
// not list, connected or not; one naming another server by tools.ciba.
func TestCIBAUpstreamToolCallJudgedByItsPolicy(t *testing.T) {
	s := newToolStack(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "files", Prefix: "files__", Command: []string{"true"}, DefaultLevel: "critical"}}
		c.Tools["files__delete_all"] = config.Tool{Level: "deny"}
	})
	call := func(server, tool string) string {
		return `[{"type":"mcp_tool_call","server":"` + server + `","tool":"` + tool + `","arguments":{"path":"/srv"}}]`
	}
	r := s.raise(t, call("files", "write_file"))
	if req := s.request(t, r.str("auth_req_id")); r.status != 200 || req.Level != vocab.LevelCritical || req.Quorum != 2 {
		t.Fatalf("upstream default critical: %d %v", r.status, r.body)
	}
	if r := s.raise(t, call("files", "delete_all")); r.status != 403 || r.str("error") != CodeAccessDenied {
		t.Fatalf("denied upstream tool: %d %v", r.status, r.body)
	}
	r = s.raise(t, call("elsewhere", "delete_all"))
	if req := s.request(t, r.str("auth_req_id")); r.status != 200 || req.Level != vocab.LevelHigh {
		t.Fatalf("a server Countersign does not front: %d %v", r.status, r.body)
	}
}

// A reload that adds or removes an upstream (SetUpstreams) changes which
// mcp_tool_call details are judged by its tools' policy.
func TestCIBAUpstreamsChangeWithAReload(t *testing.T) {
	s := newToolStack(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{Name: "files", Prefix: "files__", Command: []string{"true"}, DefaultLevel: "critical"}}
	})
	detail := `[{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{"path":"/srv"}}]`
	level := func() vocab.Level {
		t.Helper()
		r := s.raise(t, detail)
		if r.status != 200 {
			t.Fatalf("bc-authorize: %d %v", r.status, r.body)
		}
		return s.request(t, r.str("auth_req_id")).Level
	}
	ups := *s.server().upstreams.Load()
	s.server().SetUpstreams(nil)
	if got := level(); got != vocab.LevelHigh {
		t.Errorf("files removed: level %s, want tools.ciba's high", got)
	}
	s.server().SetUpstreams(ups)
	if got := level(); got != vocab.LevelCritical {
		t.Errorf("files added back: level %s, want its default critical", got)
	}
}

// Writing the server's facts into one detail leaves the others as the
// client sent them, and the whole in RFC 8785 form.
func TestCIBAFactsChangeOnlyTheirDetail(t *testing.T) {
	s := newToolStack(t, nil)
	other := `{"arguments":{"n":0.1,"path":"/srv/a"},"server":"elsewhere","tool":"write","type":"mcp_tool_call"}`
	r := s.raise(t, `[`+other+`,{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"10.00"},"creditorName":"Acme Supplies","debtorAccount":{"id":"operating"}}]`)
	if r.status != 200 {
		t.Fatalf("bc-authorize: %d %v", r.status, r.body)
	}
	got := string(s.request(t, r.str("auth_req_id")).AuthorizationDetails)
	want := `[` + other + `,{"counterpartyKnown":true,"creditorName":"Acme Supplies","debtorAccount":{"id":"operating"},"instructedAmount":{"amount":"10.00","currency":"USD"},"newCounterparty":false,"type":"payment_initiation"}]`
	if got != want {
		t.Errorf("details\n%s\nwant\n%s", got, want)
	}
}

// A restart forgets no CIBA payment, whether or not the log keeps its
// arguments (issue 22, row 8, through CIBA): those approved or still
// waiting count again in the transfer windows, a denied one does not.
func TestCIBAPaymentsCountAfterARestart(t *testing.T) {
	for _, redact := range []bool{true, false} {
		t.Run(redactedName(redact), func(t *testing.T) {
			s := newToolStack(t, redactCIBA(redact))
			ids := make([]string, 4)
			for i := range ids {
				r := s.raise(t, payment("240000.00", "Acme Supplies", ""))
				if r.status != 200 {
					t.Fatalf("bc-authorize: %d %v", r.status, r.body)
				}
				ids[i] = r.str("auth_req_id")
			}
			s.tap(t, "alice", ids[0], "approve")
			if got := s.post(t, PathToken, "ci-bot", pollForm(ids[0])); got.status != 200 {
				t.Fatalf("token: %d %v", got.status, got.body)
			}
			s.tap(t, "alice", ids[1], "deny")
			s.checkRedacted(t, redact)
			s.restart()
			// 720,000 counts (approved, and two waiting): 250,000 more stays
			// under 1,000,000 only if the denied one does not count...
			r := s.raise(t, payment("250000.00", "Acme Supplies", ""))
			if req := s.request(t, r.str("auth_req_id")); r.status != 200 || req.Level != vocab.LevelHigh {
				t.Fatalf("970,000 in a day after a restart: %d %v, level %s, want high", r.status, r.body, req.Level)
			}
			// ...and 40,000 more passes it only if the others do.
			r = s.raise(t, payment("40000.00", "Acme Supplies", ""))
			if req := s.request(t, r.str("auth_req_id")); r.status != 200 || req.Level != vocab.LevelCritical {
				t.Fatalf("1,010,000 in a day after a restart: %d %v, level %s, want critical", r.status, r.body, req.Level)
			}
		})
	}
}

// Issue 22, row 8, through CIBA: with redact_args on tools.ciba and on
// transfer, a CIBA payment of 9,999 to a payee, a restart, then 9,999
// more to the same payee, as a transfer call or as a CIBA payment: the
// 19,998 they add up to (over 10,000) needs the transfer policy's
// approval. The same without redaction.
func TestCIBAPaymentAndTransferAddUpAcrossARestart(t *testing.T) {
	for _, redact := range []bool{true, false} {
		t.Run(redactedName(redact), func(t *testing.T) {
			s := newToolStack(t, func(c *config.Config) {
				redactCIBA(redact)(c)
				tr := c.Tools["transfer"]
				tr.Wait = "poll" // the call returns with its request pending
				c.Tools["transfer"] = tr
			})
			r := s.raise(t, payment("9999.00", "Acme Supplies", ""))
			if r.status != 200 {
				t.Fatalf("bc-authorize: %d %v", r.status, r.body)
			}
			id := r.str("auth_req_id")
			if rule := s.requestedRule(t, id); strings.Contains(rule, "transfer:") {
				t.Fatalf("the first 9,999 is judged by transfer rule %q", rule)
			}
			s.tap(t, "alice", id, "approve")
			if got := s.post(t, PathToken, "ci-bot", pollForm(id)); got.status != 200 {
				t.Fatalf("token: %d %v", got.status, got.body)
			}
			s.checkRedacted(t, redact)
			s.restart()

			// A transfer call of 9,999 more waits for a human.
			before := len(s.entries(t))
			res := s.guard().Handle(context.Background(), guard.Call{Tool: "transfer", Agent: "ci-bot",
				Args: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 9999.0, "currency": "USD"}})
			var requested *audit.Entry
			for _, e := range s.entries(t)[before:] {
				if e.Kind == vocab.KindApprovalRequested && e.Tool == "transfer" {
					requested = &e
				}
			}
			if requested == nil || !strings.Contains(requested.Rule, "large-or-new-payee") {
				t.Fatalf("after a restart, a transfer of 9,999 more to the payee of a CIBA payment of 9,999 was not held for approval: %+v %+v", requested, res.Content)
			}
			// A CIBA payment of 9,999 more is judged by the same rule.
			r = s.raise(t, payment("9999.00", "Acme Supplies", ""))
			if rule := s.requestedRule(t, r.str("auth_req_id")); r.status != 200 || !strings.Contains(rule, "transfer:large-or-new-payee") {
				t.Fatalf("after a restart, a second CIBA payment of 9,999: %d %v, rule %q", r.status, r.body, rule)
			}
		})
	}
}

// requestedRule is the rule its approval.requested entry names.
func (s *stack) requestedRule(t *testing.T, id string) string {
	t.Helper()
	for _, e := range s.entries(t) {
		if e.Kind == vocab.KindApprovalRequested && e.RequestID == id {
			return e.Rule
		}
	}
	t.Fatalf("no approval.requested for %s", id)
	return ""
}

func redactedName(redact bool) string {
	return map[bool]string{true: "redacted", false: "in the log"}[redact]
}

// redactCIBA sets redact_args on tools.ciba and on transfer.
func redactCIBA(redact bool) func(*config.Config) {
	return func(c *config.Config) {
		for _, name := range []string{Tool, "transfer"} {
			tc := c.Tools[name]
			tc.RedactArgs = redact
			c.Tools[name] = tc
		}
	}
}

// checkRedacted fails unless the log keeps the CIBA requests' arguments
// exactly when it should: the restart must not find them there.
func (s *stack) checkRedacted(t *testing.T, redact bool) {
	t.Helper()
	for _, e := range s.entries(t) {
		if e.Tool == Tool && e.Kind == vocab.KindApprovalRequested && (len(e.Args) == 0) != redact {
			t.Fatalf("redact %v, and %s keeps arguments %s", redact, e.Kind, e.Args)
		}
	}
}
