package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// grantSite is a running Countersign whose transfers allow standing
// grants, with alice's key enrolled and agents authenticated by token.
type grantSite struct {
	*product
	page *approvaltest.Page
	key  *approvaltest.SoftKey // alice's
	base string                // agent listener, without /mcp
}

// startGrants serves transfers in poll mode (a call that needs a human
// returns authorization_pending at once, so every outcome here is read
// without waiting) with grants of at most maxCalls calls.
func startGrants(t *testing.T, maxCalls int, agents ...string) *grantSite {
	t.Helper()
	p := startProduct(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		tool.Grants = config.Grants{MaxDuration: 15 * time.Minute, MaxCalls: maxCalls, AtMost: []string{"amount"}, Free: []string{"memo", "idempotency_key"}}
		c.Tools["transfer"] = tool
		for _, a := range agents {
			sum := sha256.Sum256([]byte(a + "-token"))
			c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: a, TokenSHA256: hex.EncodeToString(sum[:])})
		}
	})
	u, _ := url.Parse(p.page)
	s := &grantSite{product: p, page: approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page),
		key: approvaltest.NewSoftKey(t, "localhost", p.page), base: strings.TrimSuffix(p.agent, "/mcp")}
	link, err := p.Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.page.Enroll(link, s.key); err != nil {
		t.Fatal(err)
	}
	return s
}

func pay(to string, amount float64) map[string]any {
	return map[string]any{"from": "operating", "to": to, "amount": amount, "currency": "USD"}
}

// outcome calls transfer and says whether it ran ("completed") or waits
// for a human ("authorization_pending"), with the request id then.
func outcome(t *testing.T, cs *sdk.ClientSession, args map[string]any) (status, id string) {
	t.Helper()
	res := servertest.CallTool(t, cs, "transfer", args)
	if res.IsError {
		t.Fatalf("transfer %v: %s", args, servertest.ResultText(res))
	}
	var out struct {
		Status    string `json:"status"`
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil {
		t.Fatalf("transfer %v: %s (%v)", args, servertest.ResultText(res), err)
	}
	return out.Status, out.AuthReqID
}

// grantFor raises a request with args and approves it on the page with a
// grant of calls calls for d; it returns the grant's id.
func (s *grantSite) grantFor(t *testing.T, cs *sdk.ClientSession, args map[string]any, d time.Duration, calls int) string {
	t.Helper()
	st, id := outcome(t, cs, args)
	if st != "authorization_pending" {
		t.Fatalf("the first transfer did not wait for a human: %s", st)
	}
	r, err := s.page.ApproveWithGrant(id, s.key, d, calls)
	if err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve with grant: %v %+v", err, r)
	}
	grants, err := s.page.Grants()
	if err != nil || len(grants) == 0 || grants[0].RequestID != id {
		t.Fatalf("the page does not list the new grant: %v %+v", err, grants)
	}
	return grants[0].ID
}

// grantedCalls returns the call.allowed entries a grant let through.
func grantedCalls(t *testing.T, s *stack, grant string) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for _, e := range entries(t, s, vocab.KindCallAllowed) {
		if e.GrantID == grant {
			out = append(out, e)
		}
	}
	return out
}

// exportAndVerify exports the log and runs `audit verify` on it; it
// returns the export's path and what verify printed.
func exportAndVerify(t *testing.T, p *product) (string, string) {
	t.Helper()
	p.stop()
	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", export)
	keyFile := filepath.Join(dir, "server.pub")
	if err := os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600); err != nil {
		t.Fatal(err)
	}
	return export, runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile, "--replay-policy")
}

// One tap approves a transfer and grants two more like it: calls within
// the grant run at once; a higher amount, another payee and another agent
// wait for a human as before; the third call after the grant is used up
// waits too. The log names the grant on each call it let through, and
// audit verify checks them offline.
func TestGrantLetsMatchingCallsThroughAndRefusesOthers(t *testing.T) {
	s := startGrants(t, 5, "ci", "other")
	ci, other := agentSession(t, s.base, "ci"), agentSession(t, s.base, "other")
	grant := s.grantFor(t, ci, pay("Acme Supplies", 20000), 10*time.Minute, 2)

	if st, _ := outcome(t, ci, map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 15000, "currency": "USD", "memo": "invoice 7"}); st != "completed" {
		t.Fatalf("a call within the grant: %s", st)
	}
	for name, tc := range map[string]struct {
		cs   *sdk.ClientSession
		args map[string]any
	}{
		"a higher amount": {ci, pay("Acme Supplies", 20000.01)},
		"another payee":   {ci, pay("Globex Logistics", 15000)},
		"another agent":   {other, pay("Acme Supplies", 15000)},
		"another account": {ci, map[string]any{"from": "payroll", "to": "Acme Supplies", "amount": 15000, "currency": "EUR"}},
	} {
		if st, id := outcome(t, tc.cs, tc.args); st != "authorization_pending" || id == "" {
			t.Errorf("%s: %s, want it to wait for a human", name, st)
		}
	}
	if st, _ := outcome(t, ci, pay("Acme Supplies", 20000)); st != "completed" {
		t.Fatalf("the grant's second call (the same amount): %s", st)
	}
	if st, _ := outcome(t, ci, pay("Acme Supplies", 100)); st == "completed" {
		// 100 alone is low, but the agent's day with this payee is now
		// over 10,000: the policy says high.
		t.Fatal("a third call ran on a grant of two")
	}

	calls := grantedCalls(t, s.stack, grant)
	if len(calls) != 2 {
		t.Fatalf("%d calls name the grant, want 2", len(calls))
	}
	var created audit.Entry
	for _, e := range entries(t, s.stack, vocab.KindApprovalAssertion) {
		if e.GrantID == grant {
			created = e
		}
	}
	if created.Seq == 0 || created.GrantMaxCalls != 2 || !strings.Contains(created.GrantCondition, `args.to == "Acme Supplies"`) ||
		!strings.Contains(created.GrantCondition, `args.amount <= 20000`) || !strings.Contains(created.GrantCondition, `agent == "ci"`) {
		t.Fatalf("the approval that created the grant: %+v", created)
	}
	for _, c := range calls {
		if c.GrantSeq != created.Seq || c.Decision != string(vocab.LevelHigh) || c.RequestID != "" || c.DecidedAt == "" {
			t.Errorf("granted call %d: grant_seq %d (want %d), decision %s, request %q, decided_at %q", c.Seq, c.GrantSeq, created.Seq, c.Decision, c.RequestID, c.DecidedAt)
		}
	}
	executed := 0
	for _, e := range entries(t, s.stack, vocab.KindCallExecuted) {
		if e.GrantID == grant && e.GrantSeq == created.Seq {
			executed++
		}
	}
	if executed != 2 {
		t.Errorf("%d executions name the grant, want 2", executed)
	}

	export, out := exportAndVerify(t, s.product)
	if !strings.Contains(out, "2 calls let through by standing grants") {
		t.Errorf("audit verify: %s", out)
	}
	// The amount of a granted call, changed in the export, breaks it.
	raw, _ := os.ReadFile(export)
	forged := bytes.Replace(raw, []byte(`"amount":15000,"currency":"USD","from":"operating","memo":"invoice 7"`),
		[]byte(`"amount":95000,"currency":"USD","from":"operating","memo":"invoice 7"`), 1)
	if bytes.Equal(forged, raw) {
		t.Fatal("the granted call's arguments are not in the export")
	}
	os.WriteFile(export, forged, 0o600)
	cmd := cliCommand(s.cfg, "audit", "verify", export, "--key", filepath.Join(filepath.Dir(export), "server.pub"))
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "verification failed") {
		t.Errorf("verify of a tampered export: %v\n%s", err, out)
	}
}

// Of many calls made at once, exactly the grant's count run; the rest
// wait for a human.
func TestGrantCountHoldsUnderConcurrency(t *testing.T) {
	s := startGrants(t, 10, "ci")
	ci := agentSession(t, s.base, "ci")
	grant := s.grantFor(t, ci, pay("Acme Supplies", 20000), 10*time.Minute, 3)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for range n {
		wg.Go(func() {
			res, err := ci.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: pay("Acme Supplies", 12000)})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || res.IsError {
				got["error"]++
				return
			}
			var out struct{ Status string }
			json.Unmarshal([]byte(servertest.ResultText(res)), &out)
			got[out.Status]++
		})
	}
	wg.Wait()
	if got["completed"] != 3 || got["authorization_pending"] != n-3 {
		t.Fatalf("outcomes %v, want 3 completed and %d waiting", got, n-3)
	}
	if c := grantedCalls(t, s.stack, grant); len(c) != 3 {
		t.Fatalf("%d calls name the grant, want 3", len(c))
	}
	if _, out := exportAndVerify(t, s.product); !strings.Contains(out, "3 calls let through by standing grants") {
		t.Errorf("audit verify: %s", out)
	}
}

// A revoked grant lets nothing more through, and says who revoked it; an
// expired one neither. Both are in the log, which verifies.
func TestGrantEndsOnRevocationAndExpiry(t *testing.T) {
	s := startGrants(t, 10, "ci")
	ci := agentSession(t, s.base, "ci")
	grant := s.grantFor(t, ci, pay("Acme Supplies", 20000), 10*time.Minute, 5)
	if st, _ := outcome(t, ci, pay("Acme Supplies", 20000)); st != "completed" {
		t.Fatalf("a call within the grant: %s", st)
	}
	g, err := s.page.RevokeGrant(grant)
	if err != nil || g.Active || g.RevokedBy != approval.LoopbackRevoker {
		t.Fatalf("revoke: %v %+v", err, g)
	}
	if st, _ := outcome(t, ci, pay("Acme Supplies", 20000)); st != "authorization_pending" {
		t.Fatalf("a call after the revocation: %s", st)
	}
	if _, err := s.page.RevokeGrant(grant); err == nil {
		t.Error("a grant was revoked twice")
	}
	revoked := entries(t, s.stack, vocab.KindGrantRevoked)
	if len(revoked) != 1 || revoked[0].GrantID != grant || revoked[0].Approver != approval.LoopbackRevoker || revoked[0].GrantSeq == 0 {
		t.Fatalf("grant.revoked entries: %+v", revoked)
	}

	// A grant of two seconds (at least one, its expiry being whole
	// seconds): once its expiry has passed, it lets nothing through.
	short := s.grantFor(t, ci, pay("Globex Logistics", 30000), 2*time.Second, 5)
	var expires time.Time
	grants, _ := s.page.Grants()
	for _, g := range grants {
		if g.ID == short {
			expires = g.ExpiresAt
		}
	}
	time.Sleep(time.Until(expires) + 10*time.Millisecond)
	if st, _ := outcome(t, ci, pay("Globex Logistics", 30000)); st != "authorization_pending" {
		t.Fatalf("a call after the grant expired: %s", st)
	}
	if c := grantedCalls(t, s.stack, short); len(c) != 0 {
		t.Fatalf("the expired grant let %d calls through", len(c))
	}
	if _, out := exportAndVerify(t, s.product); !strings.Contains(out, "1 calls let through by standing grants") {
		t.Errorf("audit verify: %s", out)
	}
}

var _ = exec.Command
