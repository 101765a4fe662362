package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// Issue 22, row 7, end to end: a CIBA payment of USD 5,000,000 to a payee
// the ledger does not know, claimed known, is judged as the transfer it
// is: critical, two approvers on the real approver page, the warning on
// the page and the claim quoted as the client's; and the log, exported,
// verifies with its decisions replayed against the policy.
func TestCIBAPaymentJudgedAsTransferInTheBrowser(t *testing.T) {
	var cfg *config.Config
	p := startCIBA(t, func(c *config.Config) { cfg = c })
	ctx := context.Background()
	u, _ := url.Parse(p.page)
	page := approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page)
	// alice approves in a browser, with a virtual key that verifies the
	// user; bob with a software key through the page's endpoints.
	tab := enrollInBrowser(t, p.stack, "alice")
	link, err := p.Approvals().CreateEnrollment(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	bob := approvaltest.NewSoftKey(t, "localhost", p.page)
	if err := page.Enroll(link, bob); err != nil {
		t.Fatal(err)
	}
	details := `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"5000000.00"},"creditorName":"Shell Company Ltd","counterpartyKnown":true}]`
	start := p.postForm(t, ciba.PathAuthorize, url.Values{"scope": {"openid"}, "login_hint": {"role:treasury"}, "authorization_details": {details}})
	id, _ := start["auth_req_id"].(string)
	if start["status"] != 200.0 || id == "" {
		t.Fatalf("bc-authorize: %v", start)
	}
	shown, err := page.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if shown.Level != string(vocab.LevelCritical) || shown.Quorum != 2 {
		t.Fatalf("the page shows level %s quorum %d, want critical 2", shown.Level, shown.Quorum)
	}
	for _, l := range strings.Split(shown.Display, "\n") {
		if strings.Contains(l, "counterpartyKnown") && !strings.HasPrefix(l, authzdetails.AgentPrefix) {
			t.Errorf("the client's claim is a server line: %q", l)
		}
	}
	if !strings.Contains(shown.Display, "Warning: NEW COUNTERPARTY") || !strings.Contains(shown.Display, "(claim counterpartyKnown, not what the server found): “true”") {
		t.Errorf("the page shows:\n%s", shown.Display)
	}
	// The page itself: the warning among the server's lines, the claim
	// only in the quotation of the agent's words.
	reqURL := p.page + "/requests/" + id
	approvaltest.Open(t, tab, reqURL)
	display, quote := approvaltest.Text(t, tab, "#display"), approvaltest.Text(t, tab, "#agent-text")
	if !strings.Contains(display, "NEW COUNTERPARTY") || strings.Contains(display, "counterpartyKnown") ||
		!strings.Contains(quote, "counterpartyKnown") || !strings.Contains(quote, "“true”") {
		t.Errorf("the page shows\n%s\nand quotes\n%s", display, quote)
	}
	approvaltest.Approve(t, tab, reqURL)
	approvaltest.WaitText(t, tab, "outcome", "Your approval is counted: 1 of 2")
	if r, err := page.Get(id); err != nil || r.State != vocab.StatePending || len(r.Approvals) != 1 {
		t.Fatalf("after the first tap: %v %+v", err, r)
	}
	if r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}}); r["error"] != "authorization_pending" {
		t.Fatalf("one tap of two issued: %v", r)
	}
	if r, err := page.Decide(id, "approve", bob); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("second tap: %v %+v", err, r)
	}
	if r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}}); r["status"] != 200.0 || r["approval_token"] == nil {
		t.Fatalf("token after two taps: %v", r)
	}

	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	f, err := os.Create(export)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Audit().Export(ctx, f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(runCLI(t, cfg, "audit", "pubkey")), 0o600)
	if out := runCLI(t, cfg, "audit", "verify", export, "--key", keyFile, "--replay-policy"); !strings.Contains(out, "replayed") {
		t.Errorf("verify: %s", out)
	}
}
