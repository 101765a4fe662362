package guard

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

const origin = "http://localhost:8710"

// realStack is the guard over a real audit log, approval service, policy
// and token signer, with approvers who tap software keys.
type realStack struct {
	g      *Guard
	log    *audit.Log
	svc    *approval.Service
	signer *token.Signer
	cat    *tools.Catalog
	keys   map[string]*approvaltest.SoftKey
}

func newRealStack(t *testing.T, policy map[string]config.Tool, tweak ...func(*approval.Options)) *realStack {
	t.Helper()
	ctx := context.Background()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	_, serverKey, _ := ed25519.GenerateKey(rand.Reader)
	log, err := auditpg.Open(ctx, db, serverKey, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	people := []config.Approver{{ID: "alice", Name: "Alice", Roles: []string{"ops"}}, {ID: "bob", Name: "Bob", Roles: []string{"ops"}}}
	var approvers []approval.Approver
	for _, a := range people {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	opts := approval.Options{RPID: "localhost", Origins: []string{origin}, Approvers: approvers, PollInterval: time.Second}
	for _, f := range tweak {
		f(&opts)
	}
	svc, err := approval.New(ctx, db, log, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	pol, err := authz.Compile(policy, people, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := token.DeriveKey(serverKey)
	signer, err := token.NewSigner(tk, "http://127.0.0.1:8711", token.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &realStack{log: log, svc: svc, signer: signer, cat: tools.NewCatalog(), keys: map[string]*approvaltest.SoftKey{}}
	s.g = New(Options{Catalog: s.cat, Policy: pol, Audit: log, Requests: svc, Runs: svc, Recovery: svc, Tasks: svc, Evidence: svc, Tokens: signer, Tools: policy})
	t.Cleanup(s.g.Close)
	for _, a := range people {
		s.enroll(t, a.ID)
	}
	return s
}

func (s *realStack) enroll(t *testing.T, approver string) {
	t.Helper()
	ctx := context.Background()
	key := approvaltest.NewSoftKey(t, "localhost", origin)
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

// tap has approver decide request id with their key.
func (s *realStack) tap(t *testing.T, approver, id string, decision vocab.Decision) {
	t.Helper()
	ctx := context.Background()
	opts, err := s.svc.BeginDecision(ctx, id, decision)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.svc.FinishDecision(ctx, id, opts.Ceremony, s.keys[approver].Get(opts.PublicKey.Challenge.String())); err != nil {
		t.Fatalf("%s %s: %v", approver, decision, err)
	}
}

func (s *realStack) entries(t *testing.T) []audit.Entry {
	t.Helper()
	all, err := s.log.Since(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func backchannel(approvers func([]string, int) ([]string, error)) Backchannel {
	return Backchannel{
		Tool: "ciba", Agent: "ci-bot",
		Args:    map[string]any{"scope": "openid", "login_hint": "alice", "binding_message": "Release api 1.4.2"},
		Details: json.RawMessage(`[{"environment":"production","service":"api","type":"deployment","version":"1.4.2"}]`),
		Summary: `ci-bot asks: "Release api 1.4.2"`, Approvers: approvers,
	}
}

func TestBackchannelRaiseRedeemOnce(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{"ciba": {Level: "high", Approvers: []string{"role:ops"}}})
	ctx := context.Background()
	var offered []string
	r, err := s.g.Raise(ctx, backchannel(func(allowed []string, quorum int) ([]string, error) {
		offered = allowed
		return []string{"alice"}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(offered, ",") != "alice,bob" || strings.Join(r.Approvers, ",") != "alice" || r.Tool != "ciba" {
		t.Fatalf("policy offered %v, request approvers %v", offered, r.Approvers)
	}
	if ps, tok, err := s.g.Redeem(ctx, "ciba", r.ID, "ci-bot"); err != nil || ps.Status != approval.PollPending || tok != "" {
		t.Fatalf("pending redeem: %+v %q %v", ps, tok, err)
	}
	for _, who := range []struct{ tool, agent string }{{"ciba", "other-bot"}, {"transfer", "ci-bot"}} {
		if _, _, err := s.g.Redeem(ctx, who.tool, r.ID, who.agent); !errors.Is(err, approval.ErrNotFound) {
			t.Errorf("redeem as %+v: %v", who, err)
		}
	}
	s.tap(t, "alice", r.ID, vocab.Approve)
	ps, tok, err := s.g.Redeem(ctx, "ciba", r.ID, "ci-bot")
	if err != nil || ps.Status != approval.PollApproved || tok == "" {
		t.Fatalf("approved redeem: %+v %q %v", ps, tok, err)
	}
	c, err := token.Verify(tok, s.signer.JWKS(), token.VerifyOptions{Issuer: s.signer.Issuer(), Audience: "ci-bot"})
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthReqID != r.ID || c.Tool != "ciba" || len(c.Approvers) != 1 || c.Approvers[0].ID != "alice" || c.Approvers[0].AssertionSHA256 == "" {
		t.Fatalf("claims %+v", c)
	}
	if string(c.AuthorizationDetails) != string(backchannel(nil).Details) {
		t.Errorf("token details %s", c.AuthorizationDetails)
	}
	if ps, tok2, err := s.g.Redeem(ctx, "ciba", r.ID, "ci-bot"); err != nil || ps.Status != approval.PollExecuted || tok2 != "" {
		t.Fatalf("second redeem: %+v %q %v", ps, tok2, err)
	}

	// The log has the request, the approval and one execution whose result
	// names this token.
	var kinds []vocab.Kind
	var executed audit.Entry
	for _, e := range s.entries(t) {
		if e.RequestID == r.ID {
			kinds = append(kinds, e.Kind)
			if e.Kind == vocab.KindCallExecuted {
				executed = e
			}
		}
	}
	want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted}
	if !slices.Equal(kinds, want) {
		t.Fatalf("entries %v, want %v", kinds, want)
	}
	sum := sha256.Sum256([]byte(tok))
	if !strings.Contains(string(executed.Result), hex.EncodeToString(sum[:])) || executed.ArgsSHA256 != c.ArgsSHA256 {
		t.Errorf("call.executed %+v does not name the token", executed)
	}
}

func TestBackchannelRefusals(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{
		"ciba": {Level: "high", Approvers: []string{"alice"}, Rules: []config.Rule{
			{Name: "no-prod-from-scripts", When: "agent == 'script'", Level: "deny"},
		}},
	})
	ctx := context.Background()
	b := backchannel(nil)
	b.Agent = "script"
	if _, err := s.g.Raise(ctx, b); !errors.As(err, new(*Refusal)) {
		t.Errorf("denied by rule: %v", err)
	}
	hint := errors.New("login_hint names nobody policy allows")
	if _, err := s.g.Raise(ctx, backchannel(func([]string, int) ([]string, error) { return nil, hint })); err != hint {
		t.Errorf("narrowing error: %v", err)
	}
	low := newRealStack(t, map[string]config.Tool{"ciba": {Level: "low"}})
	if _, err := low.g.Raise(ctx, backchannel(nil)); !errors.As(err, new(*Refusal)) || !strings.Contains(err.Error(), "nothing for a human") {
		t.Errorf("level low: %v", err)
	}
	var reasons []string
	for _, e := range s.entries(t) {
		if e.Kind == vocab.KindCallDenied && e.Tool == "ciba" {
			reasons = append(reasons, e.Reason)
		}
	}
	if len(reasons) != 2 || !strings.Contains(reasons[1], "login_hint") {
		t.Errorf("call.denied reasons %q", reasons)
	}
}

// A countersigned MCP call runs with its approval token and returns it in
// _meta; approval_status hands it out again for a poll-mode call.
func TestCountersignedCallCarriesItsToken(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{"pay": {Level: "high", Approvers: []string{"bob"}}})
	c := &counter{}
	spec := c.spec("pay")
	var gotToken string
	run := spec.Run
	spec.Run = func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
		gotToken = call.Approval
		return run(ctx, call)
	}
	if err := s.cat.Replace("test", []*tools.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan string, 1)
	go func() {
		res := s.g.Handle(ctx, Call{Tool: "pay", Agent: "agent-7", Args: map[string]any{"amount": 5.0}})
		tok, _ := res.GetResultMeta().GetMetaField(token.MCPMetaKey).(string)
		if res.IsError {
			tok = "error: " + text(res)
		}
		done <- tok
	}()
	id := waitPending(t, s)
	s.tap(t, "bob", id, vocab.Approve)
	tok := <-done
	if tok == "" || tok != gotToken {
		t.Fatalf("result token %q, tool saw %q", tok, gotToken)
	}
	claims, err := token.Verify(tok, s.signer.JWKS(), token.VerifyOptions{Audience: "agent-7"})
	if err != nil {
		t.Fatal(err)
	}
	if claims.Tool != "pay" || claims.AuthReqID != id || claims.Approvers[0].ID != "bob" {
		t.Errorf("claims %+v", claims)
	}
	args, _ := digest.NewArgs(map[string]any{"amount": 5.0, "to": "default payee"}, 0)
	if claims.ArgsSHA256 != args.Hex() {
		t.Errorf("args_sha256 %s is not that of the arguments that ran", claims.ArgsSHA256)
	}
}

func TestPollModeStatusCarriesTheToken(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{
		"pay":             {Level: "high", Approvers: []string{"bob"}, Wait: "poll"},
		"approval_status": {Level: "low"},
	})
	c := &counter{}
	if err := s.cat.Replace("test", []*tools.Spec{c.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	if err := s.cat.Replace("guard", []*tools.Spec{s.g.StatusSpec()}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res := s.g.Handle(ctx, Call{Tool: "pay", Agent: "agent-7", Args: map[string]any{"amount": 5.0}})
	var pending struct {
		ID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal([]byte(text(res)), &pending); err != nil || pending.ID == "" {
		t.Fatalf("poll-mode answer %s", text(res))
	}
	s.tap(t, "bob", pending.ID, vocab.Approve)
	deadline := time.Now().Add(10 * time.Second)
	for c.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var status *mcp.CallToolResult
	for time.Now().Before(deadline) {
		status = s.g.Handle(ctx, Call{Tool: "approval_status", Agent: "agent-7", Args: map[string]any{"auth_req_id": pending.ID}})
		if strings.Contains(text(status), `"executed"`) {
			break
		}
		time.Sleep(1100 * time.Millisecond) // the poll interval
	}
	tok, _ := status.GetResultMeta().GetMetaField(token.MCPMetaKey).(string)
	if _, err := token.Verify(tok, s.signer.JWKS(), token.VerifyOptions{Audience: "agent-7"}); err != nil {
		t.Fatalf("approval_status of an executed request: %s, token %q: %v", text(status), tok, err)
	}
}

func waitPending(t *testing.T, s *realStack) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range s.entries(t) {
			if e.Kind == vocab.KindApprovalRequested {
				return e.RequestID
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no approval request raised")
	return ""
}

// The auth_req_id lives until expires_at, approved or not: an approval
// exchanged after that is expired, and the request ends failed, recorded.
func TestBackchannelRedeemedTooLateIsExpired(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{"ciba": {Level: "high", Approvers: []string{"alice"}}})
	ctx := context.Background()
	b := backchannel(nil)
	// Long enough for the tap to land first on a loaded machine (CI's two
	// cores run many test binaries at once).
	b.Timeout = 8 * time.Second
	r, err := s.g.Raise(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	s.tap(t, "alice", r.ID, vocab.Approve)
	time.Sleep(time.Until(r.ExpiresAt) + 50*time.Millisecond)
	ps, tok, err := s.g.Redeem(ctx, "ciba", r.ID, "ci-bot")
	if err != nil || ps.Status != approval.PollExpired || tok != "" {
		t.Fatalf("late redeem: %+v %q %v", ps, tok, err)
	}
	got, _ := s.svc.Get(ctx, r.ID)
	if got.State != vocab.StateFailed {
		t.Errorf("state %s, want failed", got.State)
	}
	var failed bool
	for _, e := range s.entries(t) {
		failed = failed || (e.RequestID == r.ID && e.Kind == vocab.KindCallFailed && strings.Contains(e.Reason, "expired"))
	}
	if !failed {
		t.Error("no call.failed entry")
	}
	if ps, _, _ := s.g.Redeem(ctx, "ciba", r.ID, "ci-bot"); ps.Status == approval.PollApproved {
		t.Error("redeemable after all")
	}
}

// An action that moves value counts in its tool's usage windows while
// its request lives, and stops counting when the request is denied.
func TestBackchannelActionCountsUntilDenied(t *testing.T) {
	s := newRealStack(t, map[string]config.Tool{
		"ciba": {Level: "high", Approvers: []string{"role:ops"}},
		"pay":  {Level: "low", Rules: []config.Rule{{Name: "sum", When: "usage.agent_amount_24h > 0.0", Level: "critical"}}, Approvers: []string{"role:ops"}},
	})
	pay := &tools.Spec{
		Def: mcp.NewToolWithRawSchema("pay", "", json.RawMessage(`{"type":"object"}`)),
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			amount, _ := args["amount"].(float64)
			return &tools.Call{Args: args, Details: json.RawMessage(`[]`),
				Value: &tools.Value{Amount: amount, Currency: "USD", Counterparty: "X"}}, nil
		},
	}
	if err := s.cat.Replace("test", []*tools.Spec{pay}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raise := func() *approval.Request {
		t.Helper()
		call, err := s.g.PrepareAction(ctx, "pay", map[string]any{"amount": 100.0})
		if err != nil {
			t.Fatal(err)
		}
		b := backchannel(nil)
		b.Actions = []Action{{Tool: "pay", Call: call}}
		r, err := s.g.Raise(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first := raise()
	if first.Level != "high" {
		t.Fatalf("first payment %s, want high", first.Level)
	}
	if second := raise(); second.Level != "critical" || second.Quorum != 2 {
		t.Fatalf("second payment %s quorum %d, want critical 2: the first counts", second.Level, second.Quorum)
	} else {
		s.tap(t, "alice", second.ID, vocab.Deny)
	}
	s.tap(t, "alice", first.ID, vocab.Deny)
	// The release follows the denials as the guard hears of them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.g.usage.mu.Lock()
		left := s.g.usage.facts(keysOf("ci-bot", "pay", &tools.Value{Currency: "USD", Counterparty: "X"}), s.g.now())["agent_amount_24h"]
		s.g.usage.mu.Unlock()
		if left == 0.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("denied payments still count: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.g.PrepareAction(ctx, "nothing", nil); !errors.Is(err, ErrNoTool) {
		t.Errorf("an unknown tool: %v", err)
	}
}
