package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// Issue 22, row 8, through CIBA, on the real server: with redact_args on
// tools.ciba and on transfer, a CIBA payment of 9,999 is approved and its
// token issued, the server stops and starts again on the same data
// directory, and a second CIBA payment of 9,999 to the same payee is held
// by the transfer policy's rule for the 19,998 they add up to. The export
// keeps no CIBA request's arguments and verifies. The same without
// redaction.
func TestCIBAPaymentsAddUpAcrossARestartOfServe(t *testing.T) {
	for _, redact := range []bool{true, false} {
		t.Run(map[bool]string{true: "redacted", false: "in the log"}[redact], func(t *testing.T) {
			sum := sha256.Sum256([]byte(cibaClientToken))
			s := newSite(t, func(c *config.Config) {
				c.HTTP.Agents = []config.Agent{{ID: "ci-bot", TokenSHA256: hex.EncodeToString(sum[:])}}
				for _, name := range []string{ciba.Tool, "transfer"} {
					tc := c.Tools[name]
					tc.RedactArgs = redact
					c.Tools[name] = tc
				}
			})
			details := `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"9999.00"},"creditorName":"Acme Supplies","debtorAccount":{"id":"operating"}}]`
			pay := func(n *node) string {
				r := n.postCIBA(t, ciba.PathAuthorize, url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "authorization_details": {details}})
				id, _ := r["auth_req_id"].(string)
				if r["status"] != 200.0 || id == "" {
					t.Fatalf("bc-authorize: %v", r)
				}
				return id
			}
			n := s.start()
			first := pay(n)
			n.decide(first, "approve")
			if r := n.postCIBA(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {first}}); r["status"] != 200.0 || r["approval_token"] == nil {
				t.Fatalf("token: %v", r)
			}
			n.term()

			n = s.start()
			second := pay(n)
			n.term()
			ex := s.exportAndVerify()
			rules := map[string]string{}
			for _, e := range ex.entries {
				if e.Tool != ciba.Tool {
					continue
				}
				if redact && len(e.Args) != 0 {
					t.Errorf("%s keeps the arguments: %s", e.Kind, e.Args)
				}
				if e.Kind == vocab.KindApprovalRequested {
					rules[e.RequestID] = e.Rule
				}
			}
			if strings.Contains(rules[first], "transfer:") {
				t.Errorf("the first 9,999 is held by %q", rules[first])
			}
			if !strings.Contains(rules[second], "transfer:large-or-new-payee") {
				t.Errorf("after a restart, the second CIBA payment of 9,999 to the same payee is judged by %q, want transfer:large-or-new-payee", rules[second])
			}
		})
	}
}

// postCIBA sends a CIBA request to the node's agent listener as ci-bot.
func (n *node) postCIBA(t *testing.T, path string, form url.Values) map[string]any {
	t.Helper()
	u, err := url.Parse(n.mcp)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, u.Scheme+"://"+u.Host+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("ci-bot", cibaClientToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: status %d, not JSON: %v", path, resp.StatusCode, err)
	}
	out["status"] = float64(resp.StatusCode)
	return out
}
