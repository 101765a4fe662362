package main

// End-to-end tests of approval tokens and the CIBA backchannel: a plain
// net/http client (and a curl script) against the assembled stack, an
// approver in a real Chromium with a virtual security key, and verifiers
// that only have the published key set.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
	jwxjwk "github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
)

const cibaClientToken = "ci-bot-secret-token"

// cibaProduct is a running Countersign whose agent listener was opened
// before assembly, as serve does, so its URL is the issuer.
type cibaProduct struct {
	*stack
	base string // agent listener and issuer
	page string // approver page
}

func startCIBA(t *testing.T, edit func(*config.Config)) *cibaProduct {
	t.Helper()
	pageLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pageLn.Addr().(*net.TCPAddr).Port
	page := fmt.Sprintf("http://localhost:%d", port)
	sum := sha256.Sum256([]byte(cibaClientToken))
	c := testConfig(t, func(c *config.Config) {
		c.Approval.PublicURL = page
		c.Approval.Origins = []string{page}
		c.Approval.AllowedHosts = []string{fmt.Sprintf("localhost:%d", port)}
		c.Approval.PollInterval = time.Second
		c.HTTP.Addr = agentLn.Addr().String()
		c.HTTP.Agents = []config.Agent{{ID: "ci-bot", TokenSHA256: hex.EncodeToString(sum[:])}}
		if edit != nil {
			edit(c)
		}
	})
	log := daemontest.Logger(t, slog.LevelWarn)
	s, err := assemble(context.Background(), c, log)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + agentLn.Addr().String()
	pageSrv := daemon.NewHTTPServer(s.PageHandler(), log)
	go pageSrv.Serve(pageLn)
	h, closeSessions := s.Server().HTTPHandler(base)
	agentSrv := daemon.NewHTTPServer(h, log)
	go agentSrv.Serve(agentLn)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closeSessions(ctx)
		agentSrv.Shutdown(ctx)
		pageSrv.Close()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &cibaProduct{stack: s, base: base, page: page}
}

// postForm sends a CIBA request as ci-bot with HTTP Basic client auth.
func (p *cibaProduct) postForm(t *testing.T, path string, form url.Values) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.base+path, strings.NewReader(form.Encode()))
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

// pollToken polls the token endpoint at the interval it was given until
// the answer is not authorization_pending.
func (p *cibaProduct) pollToken(t *testing.T, id string, interval float64) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(interval * float64(time.Second)))
		r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}})
		switch r["error"] {
		case "authorization_pending":
		case "slow_down":
			t.Fatalf("slow_down while polling at the interval: %v", r)
		default:
			return r
		}
	}
	t.Fatal("still pending after 60s")
	return nil
}

func get(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return b
}

func TestCIBAApprovedInTheBrowserAndVerifiedOffline(t *testing.T) {
	p := startCIBA(t, nil)
	ctx := context.Background()
	tab := enrollInBrowser(t, p.stack, "alice")

	var meta map[string]any
	json.Unmarshal(get(t, p.base+ciba.PathDiscovery), &meta)
	if meta["issuer"] != p.base || meta["backchannel_authentication_endpoint"] != p.base+ciba.PathAuthorize {
		t.Fatalf("discovery %v", meta)
	}
	jwksJSON := get(t, meta["jwks_uri"].(string))
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwksFile, jwksJSON, 0o600)

	details := `[{"type":"payment_initiation","actions":["initiate"],"instructedAmount":{"currency":"EUR","amount":"12500.00"},"creditorName":"Globex Logistics","creditorAccount":{"iban":"DE89370400440532013000"},"remittanceInformationUnstructured":"Invoice 2026-117"}]`
	start := p.postForm(t, ciba.PathAuthorize, url.Values{
		"scope": {"openid"}, "login_hint": {"role:treasury"}, "binding_message": {"Pay invoice 2026-117"},
		"authorization_details": {details},
	})
	id, _ := start["auth_req_id"].(string)
	if start["status"] != 200.0 || id == "" {
		t.Fatalf("bc-authorize: %v", start)
	}
	if r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}}); r["error"] != "authorization_pending" {
		t.Fatalf("first poll: %v", r)
	}

	// The approver sees the client's words as a quotation, and the payment
	// rendered from authorization_details.
	reqURL := p.page + "/requests/" + id
	approvaltest.Open(t, tab, reqURL)
	if h := approvaltest.Text(t, tab, "#binding"); !strings.Contains(h, `ci-bot asks: "Pay invoice 2026-117"`) {
		t.Errorf("request page heading %q", h)
	}
	display := approvaltest.Text(t, tab, "#display")
	for _, want := range []string{"EUR 12,500.00", "Globex Logistics", "DE89370400440532013000"} {
		if !strings.Contains(display, want) {
			t.Errorf("the page does not show %q:\n%s", want, display)
		}
	}
	// The reference is the client's text: quoted apart, not a server line.
	if quote := approvaltest.Text(t, tab, "#agent-text"); !strings.Contains(quote, "“Invoice 2026-117”") || strings.Contains(display, "Invoice 2026-117") {
		t.Errorf("the reference is not shown as the agent's quotation:\n%s\n%s", display, quote)
	}
	approvaltest.Approve(t, tab, reqURL)
	approvaltest.WaitText(t, tab, "state", "approved")

	got := p.pollToken(t, id, start["interval"].(float64))
	tok, _ := got["approval_token"].(string)
	if got["status"] != 200.0 || tok == "" || got["access_token"] != tok || got["token_type"] != "N_A" {
		t.Fatalf("token response %v", got)
	}
	if r := p.postForm(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {id}}); r["error"] != "invalid_grant" {
		t.Errorf("second exchange: %v", r)
	}

	// A second, independent JOSE implementation verifies it against the
	// key set as published.
	set, err := jwxjwk.Parse(jwksJSON)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwxjwt.Parse([]byte(tok), jwxjwt.WithKeySet(set), jwxjwt.WithIssuer(p.base), jwxjwt.WithAudience("ci-bot"))
	if err != nil {
		t.Fatalf("jwx: %v", err)
	}
	var tokDigest string
	parsed.Get("digest", &tokDigest)

	// The digest in the token is the one the audit log proves: recomputed
	// from the exported approval.approved entry of this request, in an
	// export that verifies.
	var export bytes.Buffer
	if err := p.Audit().Export(ctx, &export, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(bytes.NewReader(export.Bytes()), p.Audit().PublicKey(), verify.Options{}); err != nil {
		t.Fatalf("export does not verify: %v", err)
	}
	var approved, executed audit.Entry
	sc := bufio.NewScanner(&export)
	sc.Buffer(nil, verify.MaxLine)
	for sc.Scan() {
		var e audit.Entry
		json.Unmarshal(sc.Bytes(), &e)
		if e.RequestID == id && e.Kind == vocab.KindApprovalApproved {
			approved = e
		}
		if e.RequestID == id && e.Kind == vocab.KindCallExecuted {
			executed = e
		}
	}
	args, _ := hex.DecodeString(approved.ArgsSHA256)
	nonce, _ := base64.RawURLEncoding.DecodeString(approved.Nonce)
	expires, _ := time.Parse(time.RFC3339, approved.ExpiresAt)
	want, err := digest.Compute(digest.Action{RequestID: id, Decision: vocab.Approve, AuthorizationDetails: approved.AuthorizationDetails,
		Tool: approved.Tool, ArgsSHA256: [32]byte(args), Display: approved.Display, Nonce: nonce, ExpiresAt: expires})
	if err != nil || tokDigest != hex.EncodeToString(want[:]) {
		t.Errorf("token digest %s, audit log's %x (%v)", tokDigest, want, err)
	}
	sum := sha256.Sum256([]byte(tok))
	if !strings.Contains(string(executed.Result), hex.EncodeToString(sum[:])) {
		t.Errorf("call.executed %s does not name the token", executed.Result)
	}

	// countersign token verify, with the key set from the URL or the file.
	for _, src := range []string{p.base + ciba.PathJWKS, jwksFile} {
		out, err := exec.Command(binPath, "token", "verify", tok, "--jwks", src, "--issuer", p.base, "--audience", "ci-bot").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "valid approval token") || !strings.Contains(string(out), "alice at ") ||
			!strings.Contains(string(out), id) || !strings.Contains(string(out), "Globex Logistics") {
			t.Errorf("token verify --jwks %s: %v\n%s", src, err, out)
		}
	}
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte("12500.00"), []byte("99500.00"), 1)) + "." + parts[2]
	out, err := exec.Command(binPath, "token", "verify", forged, "--jwks", jwksFile).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "signature") {
		t.Errorf("forged token: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "token", "verify", tok, "--jwks", jwksFile, "--audience", "someone-else").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "aud") {
		t.Errorf("wrong audience: %v\n%s", err, out)
	}

	// Denied on the page: access_denied.
	denied := p.postForm(t, ciba.PathAuthorize, url.Values{
		"scope": {"openid"}, "login_hint": {"alice"}, "authorization_details": {`[{"type":"secret_access","name":"prod-db-password","classification":"restricted"}]`},
	})
	deniedID, _ := denied["auth_req_id"].(string)
	approvaltest.Deny(t, tab, p.page+"/requests/"+deniedID)
	approvaltest.WaitText(t, tab, "state", "denied")
	if r := p.pollToken(t, deniedID, 1); r["error"] != "access_denied" || r["status"] != 400.0 {
		t.Errorf("denied request: %v", r)
	}
}

// The curl script of the README: it asks, polls, and hands the token to
// countersign token verify with the key set it fetched before asking.
func TestCIBAScriptWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required for the script test: apt-get install -y curl")
	}
	p := startCIBA(t, nil)
	tab := enrollInBrowser(t, p.stack, "alice")

	cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "ciba.sh"))
	cmd.Env = append(os.Environ(), "COUNTERSIGN_URL="+p.base, "CLIENT_ID=ci-bot", "CLIENT_SECRET="+cibaClientToken,
		"LOGIN_HINT=alice", "COUNTERSIGN="+binPath)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var errLines []string
	var mu sync.Mutex
	ids := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			errLines = append(errLines, sc.Text())
			mu.Unlock()
			if f := strings.Fields(sc.Text()); len(f) > 2 && f[1] == "auth_req_id" {
				ids <- f[2]
			}
		}
		close(ids)
	}()
	var id string
	select {
	case id = <-ids:
	case <-time.After(30 * time.Second):
	}
	if id == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the script raised no request; stderr: %q", errLines)
	}
	approvaltest.Approve(t, tab, p.page+"/requests/"+id)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		err = <-done
	}
	mu.Lock()
	defer mu.Unlock()
	if err != nil || !strings.Contains(stdout.String(), "valid approval token") || !strings.Contains(stdout.String(), id) ||
		!strings.Contains(stdout.String(), "alice at ") {
		t.Fatalf("script: %v\nstdout:\n%s\nstderr: %q", err, stdout.String(), errLines)
	}
}

// An approved upstream call carries its approval token to the upstream in
// the request's _meta, and the agent gets the same token in the result's
// _meta; the token names exactly the arguments the upstream received.
func TestApprovalTokenReachesTheUpstreamAndTheAgent(t *testing.T) {
	up, record := notesUpstream(t)
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{up}
		c.Tools["notes__write_note"] = config.Tool{Level: "high", Approvers: []string{"role:ops"}}
	})
	tab := enrollInBrowser(t, p.stack, "alice")
	a := newAgent(t, p)
	call := a.start("notes__write_note", map[string]any{"name": "plan", "text": "ship it"})
	reqURL, id := a.approvalURL(t, 1, call)
	approvaltest.Approve(t, tab, reqURL)
	res := await(t, call)
	if res.IsError {
		t.Fatalf("approved write_note: %s", servertest.ResultText(res))
	}
	fromResult, _ := res.Meta[token.MCPMetaKey].(string)
	var fromUpstream string
	var upstreamArgs map[string]any
	recs, err := upstreamtest.ReadRecord(record)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Tool == "write_note" && r.Event == upstreamtest.EventCalled {
			fromUpstream, _ = r.Meta[token.MCPMetaKey].(string)
			upstreamArgs = r.Arguments
		}
	}
	if fromResult == "" || fromResult != fromUpstream {
		t.Fatalf("token in the result %q, at the upstream %q", fromResult, fromUpstream)
	}
	c, err := token.Verify(fromUpstream, p.Tokens().JWKS(), token.VerifyOptions{Audience: "anonymous"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(upstreamArgs)
	canon, _ := jcs.Transform(raw)
	sum := sha256.Sum256(canon)
	if c.AuthReqID != id || c.Tool != "notes__write_note" || c.ArgsSHA256 != hex.EncodeToString(sum[:]) || c.Approvers[0].ID != "alice" {
		t.Errorf("claims %+v; the upstream got %s", c, raw)
	}
	var details []struct {
		Type      string         `json:"type"`
		Arguments map[string]any `json:"arguments"`
	}
	json.Unmarshal(c.AuthorizationDetails, &details)
	if len(details) != 1 || details[0].Type != "mcp_tool_call" || details[0].Arguments["text"] != "ship it" {
		t.Errorf("authorization_details %s", c.AuthorizationDetails)
	}
}
