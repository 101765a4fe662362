package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/page"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/identity/idptest"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
)

// A Countersign whose mcp.yaml lists no approver: alice signs in through
// the company's provider (a real OP, idptest), registers her own key,
// approves a transfer the policy gives role:treasury (finance-approvers
// at the provider) and grants two more; the export names her at the
// provider and `audit verify --replay-policy` passes. Taken out of the
// group (recheck 1ns: the provider is asked at every use), her grant lets
// nothing more through and her approval is refused; her denial counts.
// The recheck that finds she left revokes her grant (grant.revoked), so
// back in the group before it expires, it still lets nothing through.
func TestApproversFromTheIdentityProviderOnly(t *testing.T) {
	// The treasury's channel hears of requests only people of the
	// provider can approve.
	heard := make(chan string, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		heard <- string(b)
	}))
	defer hook.Close()
	idp := idptest.New(t)
	idp.AddUser("alice", "alice@example.com", "finance-approvers")
	idp.SetAutoLogin("alice")
	p := startProduct(t, func(c *config.Config) {
		c.Approvers = nil
		c.Identity = config.Identity{Issuer: idp.Issuer(), ClientID: "countersign", ClientSecret: "s3cret",
			Scopes: []string{"openid", "email", "profile", "offline_access"}, SubjectClaim: "sub", GroupsClaim: "groups",
			Roles:   map[string][]string{"treasury": {"finance-approvers"}, "ops": {"sre"}, "security": {"secops"}},
			Recheck: time.Nanosecond}
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		tool.Grants = config.Grants{MaxDuration: 15 * time.Minute, MaxCalls: 5, AtMost: []string{"amount"}}
		c.Tools["transfer"] = tool
		sum := sha256.Sum256([]byte("ci-token"))
		c.HTTP.Agents = []config.Agent{{ID: "ci", TokenSHA256: hex.EncodeToString(sum[:])}}
		c.Notify = []config.Notify{{Type: "ntfy", URL: hook.URL + "/treasury", For: []string{"role:treasury"}, Events: []string{"requested"}}}
	})
	idp.AddClient("countersign", "s3cret", []string{p.page + page.CallbackPath}, idptest.GrantAuthorizationCode, idptest.GrantRefreshToken)

	// A browser-like client: cookies, redirects, localhost to the page.
	u, _ := url.Parse(p.page)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasPrefix(addr, "localhost:") {
				addr = "127.0.0.1:" + u.Port()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	resp, err := client.Get(p.page + "/signin/oidc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != page.CallbackPath {
		t.Fatalf("sign-in through the provider: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	pg := approvaltest.NewPageWithClient(client, p.page)
	key := approvaltest.NewSoftKey(t, "localhost", p.page)
	if _, err := pg.EnrollSelf(key); err != nil {
		t.Fatal(err)
	}

	ci := agentSession(t, strings.TrimSuffix(p.agent, "/mcp"), "ci")
	st, id := outcome(t, ci, pay("Acme Supplies", 20000))
	if st != "authorization_pending" {
		t.Fatalf("the transfer did not wait for a human: %s", st)
	}
	select {
	case msg := <-heard:
		if !strings.Contains(msg, "Acme Supplies") {
			t.Errorf("the treasury's channel heard %q", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the treasury's channel never heard of the request alice may approve")
	}
	if r, err := pg.ApproveWithGrant(id, key, 10*time.Minute, 2); err != nil || r.State != vocab.StateApproved {
		t.Fatalf("alice approves with a grant: %+v %v", r, err)
	}
	if st, _ := outcome(t, ci, pay("Acme Supplies", 15000)); st != "completed" {
		t.Fatalf("a call within her grant: %s", st)
	}

	// A request raised while she still holds the role, then she leaves
	// the group: her grant lets nothing through (and with nobody left who
	// holds the role, a new request is refused at once), her approval of
	// the earlier request is refused; her denial counts.
	_, refused := outcome(t, ci, pay("Acme Supplies", 30000))
	idp.SetGroups("alice", "staff")
	res := servertest.CallTool(t, ci, "transfer", pay("Acme Supplies", 15000))
	if text := servertest.ResultText(res); !res.IsError || !strings.Contains(text, "no approvers") {
		t.Fatalf("a call her grant covered, after she left the group: %s", text)
	}
	_, err = pg.Decide(refused, string(vocab.Approve), key)
	var pe *approvaltest.Error
	if !errors.As(err, &pe) || pe.Check != "not_eligible" {
		t.Fatalf("her approval after she left the group: %v", err)
	}
	if r, err := pg.Decide(refused, string(vocab.Deny), key); err != nil || r.State != vocab.StateDenied {
		t.Fatalf("her denial: %+v %v", r, err)
	}

	alice := identity.ApproverID(idp.Issuer(), "alice")
	revoked := func() []audit.Entry {
		t.Helper()
		revs := entries(t, p.stack, vocab.KindGrantRevoked)
		if len(revs) != 1 || revs[0].Approver != daemon.ProviderRevoker || revs[0].GrantID == "" ||
			!strings.Contains(revs[0].Reason, "no longer grants alice an approver role") {
			t.Fatalf("grant.revoked after she left the group: %+v", revs)
		}
		return revs
	}
	revs := revoked()
	// Back in the group, she signs in again: her role is back, her grant
	// is not.
	idp.SetGroups("alice", "finance-approvers")
	if resp, err := client.Get(p.page + "/signin/oidc"); err != nil || resp.Body.Close() != nil || resp.StatusCode != 200 {
		t.Fatalf("sign-in again: %v %v", resp, err)
	}
	if st, _ := outcome(t, ci, pay("Acme Supplies", 15000)); st != "authorization_pending" {
		t.Fatalf("a call her revoked grant covered, back in the group: %s", st)
	}
	revoked()
	var approved bool
	for _, e := range entries(t, p.stack, vocab.KindApprovalAssertion) {
		if e.RequestID == id && e.GrantID != revs[0].GrantID {
			t.Errorf("revoked grant %s, not the one she made (%s)", revs[0].GrantID, e.GrantID)
		}
		if e.RequestID == id {
			approved = e.Approver == alice && e.IdPSubject == "alice" && e.IdPIssuer == idp.Issuer() && slices.Equal(e.IdPGroups, []string{"finance-approvers"})
		}
	}
	if !approved {
		t.Errorf("the approval does not name alice at the provider: %+v", entries(t, p.stack, vocab.KindApprovalAssertion))
	}
	if sus := entries(t, p.stack, vocab.KindApproverSuspended); len(sus) != 1 || sus[0].Approver != alice ||
		!slices.Equal(sus[0].IdPGroups, []string{"staff"}) || !strings.Contains(sus[0].Reason, "none of the groups") {
		t.Errorf("approver.suspended: %+v", sus)
	}
	_, out := exportAndVerify(t, p)
	t.Logf("audit verify --replay-policy: %s", out)
}
