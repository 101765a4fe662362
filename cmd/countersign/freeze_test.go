package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// freezeSite serves agents ci and other over HTTP; transfers wait in
// block mode and allow standing grants; alice's key is enrolled.
func freezeSite(t *testing.T) (*product, *approvaltest.Page, *approvaltest.SoftKey, string) {
	t.Helper()
	p := startProduct(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Grants = config.Grants{MaxDuration: 15 * time.Minute, MaxCalls: 5, AtMost: []string{"amount"}, Free: []string{"memo", "idempotency_key"}}
		c.Tools["transfer"] = tool
		for _, a := range []string{"ci", "other"} {
			sum := sha256.Sum256([]byte(a + "-token"))
			c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: a, TokenSHA256: hex.EncodeToString(sum[:])})
		}
	})
	u, _ := url.Parse(p.page)
	page := approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page)
	key := approvaltest.NewSoftKey(t, "localhost", p.page)
	link, err := p.Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := page.Enroll(link, key); err != nil {
		t.Fatal(err)
	}
	return p, page, key, strings.TrimSuffix(p.agent, "/mcp")
}

// waitingCall makes a call that waits for a human and returns its
// request id (as the page lists it) and the call's result, once it ends.
func waitingCall(t *testing.T, p *product, page *approvaltest.Page, cs *sdk.ClientSession, args map[string]any) (string, <-chan *sdk.CallToolResult) {
	t.Helper()
	before, err := page.Pending()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *sdk.CallToolResult, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "transfer", Arguments: args})
		if err != nil {
			t.Error(err)
			res = &sdk.CallToolResult{IsError: true}
		}
		done <- res
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ids, _ := page.Pending()
		for _, id := range ids {
			if !slices.Contains(before, id) {
				return id, done
			}
		}
	}
	t.Fatal("the call raised no request")
	return "", nil
}

func result(t *testing.T, done <-chan *sdk.CallToolResult) *sdk.CallToolResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting call did not return")
		return nil
	}
}

func balance(t *testing.T, cs *sdk.ClientSession) (ok bool, text string) {
	t.Helper()
	res := servertest.CallTool(t, cs, "get_balance", map[string]any{"account": "operating"})
	return !res.IsError, servertest.ResultText(res)
}

// The kill switch through the real server, the real CLI binary (another
// process, on the same database) and the go-sdk client: `agents freeze
// ci` while serve runs refuses ci's next routine call with the words an
// admin needs, ends its waiting call as cancelled and revokes its grant,
// while the other agent goes on; unfreeze restores it; --all stops every
// agent. The page's Freeze button freezes too, with who pressed it, and a
// tap begun before it approves nothing. The log verifies offline.
func TestAgentsFreeze(t *testing.T) {
	p, page, key, base := freezeSite(t)
	ci, other := agentSession(t, base, "ci"), agentSession(t, base, "other")

	// ci's grant, and a call of ci waiting for a human.
	id, done := waitingCall(t, p, page, ci, pay("Acme Supplies", 20000))
	if r, err := page.ApproveWithGrant(id, key, 10*time.Minute, 5); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve with grant: %v %+v", err, r)
	}
	if res := result(t, done); res.IsError {
		t.Fatalf("the granted request: %s", servertest.ResultText(res))
	}
	grants, _ := page.Grants()
	if len(grants) != 1 || !grants[0].Active {
		t.Fatalf("grants: %+v", grants)
	}
	waiting, done := waitingCall(t, p, page, ci, pay("Globex Logistics", 30000))

	runCLI(t, p.cfg, "agents", "freeze", "ci", "--reason", "incident 7")
	actor := cliActor()

	res := result(t, done)
	if !res.IsError || !strings.Contains(servertest.ResultText(res), "approval request "+waiting+" was cancelled: agent ci frozen by "+actor) {
		t.Fatalf("ci's waiting call after the freeze: %s", servertest.ResultText(res))
	}
	ok, text := balance(t, ci)
	if ok || !strings.Contains(text, "refused: agent ci is frozen by "+actor+" since ") ||
		!strings.HasSuffix(text, "an admin can run `countersign agents unfreeze ci`") {
		t.Fatalf("ci's routine call after the freeze: %v %s", ok, text)
	}
	if res := servertest.CallTool(t, ci, "transfer", pay("Acme Supplies", 20000)); !res.IsError || !strings.Contains(servertest.ResultText(res), "is frozen") {
		t.Fatalf("ci's transfer within its former grant: %s", servertest.ResultText(res))
	}
	grants, _ = page.Grants()
	if grants[0].Active || grants[0].RevokedBy != actor {
		t.Fatalf("ci's grant after the freeze: %+v", grants[0])
	}
	if ok, text := balance(t, other); !ok {
		t.Fatalf("the other agent's call: %s", text)
	}
	if out := runCLI(t, p.cfg, "agents", "list"); !strings.Contains(out, "ci") || !strings.Contains(out, "frozen: ci by "+actor) {
		t.Fatalf("agents list:\n%s", out)
	}
	denied := 0
	for _, e := range entries(t, p.stack, vocab.KindCallDenied) {
		if e.Agent == "ci" && strings.Contains(e.Reason, "agent ci is frozen by "+actor) {
			denied++
		}
	}
	if denied != 1 { // two refusals in the same minute: one entry
		t.Fatalf("%d call.denied entries for ci's refused calls, want 1", denied)
	}

	runCLI(t, p.cfg, "agents", "unfreeze", "ci")
	if ok, text := balance(t, ci); !ok {
		t.Fatalf("ci's call after the unfreeze: %s", text)
	}
	runCLI(t, p.cfg, "agents", "freeze", "--all")
	for name, cs := range map[string]*sdk.ClientSession{"ci": ci, "other": other} {
		if ok, text := balance(t, cs); ok || !strings.Contains(text, "all agents are frozen by "+actor) {
			t.Fatalf("%s's call while every agent is frozen: %s", name, text)
		}
	}
	runCLI(t, p.cfg, "agents", "unfreeze", "--all")
	if ok, text := balance(t, other); !ok {
		t.Fatalf("other's call after unfreeze --all: %s", text)
	}

	// The page: an approver opens other's request and begins a tap; the
	// Freeze button is pressed before the key answers.
	id, done = waitingCall(t, p, page, other, pay("Globex Logistics", 30000))
	ceremony, challenge, err := page.BeginDecision(id, "approve")
	if err != nil {
		t.Fatal(err)
	}
	if err := page.FreezeAgent("other"); err != nil {
		t.Fatal(err)
	}
	if r, err := page.FinishDecision(id, ceremony, key.Get(challenge)); err == nil {
		t.Fatalf("a tap after the freeze: %+v", r)
	}
	if r, _ := page.Get(id); r.State != vocab.StateCancelled {
		t.Fatalf("other's request after the freeze and the tap: %+v", r)
	}
	if res := result(t, done); !res.IsError || !strings.Contains(servertest.ResultText(res), "agent other frozen by "+approval.LoopbackRevoker) {
		t.Fatalf("other's waiting call: %s", servertest.ResultText(res))
	}
	if ok, text := balance(t, other); ok || !strings.Contains(text, "agent other is frozen by "+approval.LoopbackRevoker) {
		t.Fatalf("other's call after the page froze it: %s", text)
	}
	var frozen []string
	for _, e := range entries(t, p.stack, vocab.KindAgentFrozen) {
		frozen = append(frozen, e.Agent+" by "+e.Approver)
	}
	if want := []string{"ci by " + actor, "* by " + actor, "other by " + approval.LoopbackRevoker}; !slices.Equal(frozen, want) {
		t.Fatalf("agent.frozen entries %q, want %q", frozen, want)
	}
	if n := len(entries(t, p.stack, vocab.KindAgentUnfrozen)); n != 2 {
		t.Fatalf("%d agent.unfrozen entries, want 2", n)
	}

	if _, out := exportAndVerify(t, p); !strings.HasPrefix(out, "OK: ") {
		t.Errorf("audit verify: %s", out)
	}
}

// A CIBA client frozen with `agents freeze`: its approved request not yet
// redeemed never yields a token, its pending one is cancelled, and a new
// backchannel request is refused, each as access_denied.
func TestAgentsFreezeStopsCIBA(t *testing.T) {
	p := startCIBA(t, nil)
	u, _ := url.Parse(p.page)
	page := approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page)
	key := approvaltest.NewSoftKey(t, "localhost", p.page)
	link, err := p.Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := page.Enroll(link, key); err != nil {
		t.Fatal(err)
	}
	authorize := func() map[string]any {
		return p.postForm(t, ciba.PathAuthorize, url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "binding_message": {"Pay invoice 7"},
			"authorization_details": {`[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"EUR","amount":"12500.00"},"creditorName":"Globex Logistics"}]`}})
	}
	approved, _ := authorize()["auth_req_id"].(string)
	pending, _ := authorize()["auth_req_id"].(string)
	if approved == "" || pending == "" {
		t.Fatal("bc-authorize raised no request")
	}
	if r, err := page.Decide(approved, "approve", key); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approve: %v %+v", err, r)
	}

	runCLI(t, p.Config(), "agents", "freeze", "ci-bot")
	for _, id := range []string{approved, pending} {
		r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}})
		if r["error"] != "access_denied" || r["access_token"] != nil {
			t.Fatalf("token for %s after the freeze: %v", id, r)
		}
	}
	if r, _ := page.Get(approved); r.State != vocab.StateFailed || !strings.Contains(r.Reason, "not run: agent ci-bot is frozen") {
		t.Fatalf("the approved request: %+v", r)
	}
	if r, _ := page.Get(pending); r.State != vocab.StateCancelled {
		t.Fatalf("the pending request: %+v", r)
	}
	if r := authorize(); r["error"] != "access_denied" || !strings.Contains(fmt.Sprint(r["error_description"]), "agent ci-bot is frozen by") {
		t.Fatalf("bc-authorize after the freeze: %v", r)
	}
}
