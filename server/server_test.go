package server_test

// The server is tested here over its real parts: the shipped configuration,
// the demo ledger's tools, the policy compiled from it, an audit log and
// approval store in a SQLite file, and approvers who tap software keys.
// Agents are real MCP clients: the official go-sdk, and mcp-go's client
// where a call is task-augmented.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/server"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/token"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The protocol versions clients speak today: the go-sdk's default and the
// one before it (DESIGN.md, "What we know about the libraries").
var protocolVersions = []string{"2026-07-28", "2025-11-25"}

// origin is the approver page's origin the software keys sign for.
const origin = "http://localhost:8710"

// agentTokens are the bearer tokens of the agents withAgents configures.
var agentTokens = map[string]string{"agent-a": "token-of-agent-a", "agent-b": "token-of-agent-b"}

func withAgents(c *config.Config) {
	c.HTTP.Agents = nil
	for id, tok := range agentTokens {
		sum := sha256.Sum256([]byte(tok))
		c.HTTP.Agents = append(c.HTTP.Agents, config.Agent{ID: id, TokenSHA256: hex.EncodeToString(sum[:])})
	}
}

// stack is a server over a real guard.
type stack struct {
	cfg       *config.Config
	audit     *audit.Log
	approvals *approval.Service
	guard     *guard.Guard
	catalog   *tools.Catalog
	server    *server.Server
	key       *approvaltest.SoftKey // alice's
}

// newStack wires the server the way `countersign serve` does, from the
// shipped configuration after edit.
func newStack(t *testing.T, edit func(*config.Config)) *stack {
	t.Helper()
	ctx := context.Background()
	c, err := config.Parse(countersign.DefaultConfig(), "test")
	if err != nil {
		t.Fatal(err)
	}
	c.Server.DataDir = t.TempDir()
	root, _ := filepath.Abs("..")
	c.Deploy.Command[0] = filepath.Join(root, c.Deploy.Command[0])
	c.Secrets.Dir = filepath.Join(root, c.Secrets.Dir)
	c.Approval.ProgressEvery = 200 * time.Millisecond
	if edit != nil {
		edit(c)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	db, err := store.Connect(ctx, filepath.Join(c.Server.DataDir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, serverKey, _ := ed25519.GenerateKey(rand.Reader)
	s := &stack{cfg: c}
	if s.audit, err = audit.Open(ctx, db.DB, serverKey, audit.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.audit.Close() })
	catalog, err := tools.New(ctx, c, db)
	if err != nil {
		t.Fatal(err)
	}
	s.catalog = catalog
	var approvers []approval.Approver
	for _, a := range c.Approvers {
		approvers = append(approvers, approval.Approver{ID: a.ID, Name: a.Name, Roles: a.Roles})
	}
	if s.approvals, err = approval.New(ctx, db, s.audit, approval.Options{
		RPID: "localhost", Origins: []string{origin}, Approvers: approvers, PollInterval: c.Approval.PollInterval,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.approvals.Close() })
	schemas := map[string]authz.Schema{}
	for name, sc := range tools.Schemas(c) {
		schemas[name] = authz.Schema(sc)
	}
	policy, err := authz.Compile(c.Tools, c.Approvers, authz.Options{
		DefaultTimeout: c.Approval.Timeout, Facts: tools.Facts(), Schemas: schemas,
	})
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := token.DeriveKey(serverKey)
	signer, err := token.NewSigner(tk, "http://127.0.0.1:8711", token.SignerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	amounts, err := store.OpenAmounts(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	s.guard = guard.New(guard.Options{
		Catalog: catalog, Policy: policy, Audit: s.audit,
		Requests: s.approvals, Runs: s.approvals, Recovery: s.approvals, Tasks: s.approvals, Grants: s.approvals,
		Evidence: s.approvals, Tokens: signer, History: s.audit, Marks: store.Marks{DB: db}, Amounts: amounts,
		Tools: c.Tools, Logger: log, Freezes: s.approvals,
	})
	t.Cleanup(s.guard.Close)
	if err := catalog.Replace("guard", []*tools.Spec{s.guard.StatusSpec()}); err != nil {
		t.Fatal(err)
	}
	if s.server, err = server.New(server.Options{Config: c, Catalog: catalog, Guard: s.guard, Version: "test", Logger: log,
		Routes: map[string]http.Handler{"/route": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("route reached"))
		})},
		Holders: func(ctx context.Context) (map[string]bool, error) {
			keys, err := s.approvals.Credentials(ctx)
			return ceremony.Holders(keys), err
		},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.server.Close)
	s.enroll(t)
	return s
}

// enroll enrolls a software key for alice, who may approve transfers.
func (s *stack) enroll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s.key = approvaltest.NewSoftKey(t, "localhost", origin)
	link, err := s.approvals.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok := link[strings.LastIndex(link, "/")+1:]
	opts, err := s.approvals.BeginEnrollment(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.approvals.FinishEnrollment(ctx, tok, opts.Ceremony, s.key.Create(t, opts.PublicKey)); err != nil {
		t.Fatal(err)
	}
}

// decide has alice approve or deny request id with her key.
func (s *stack) decide(t *testing.T, id string, decision vocab.Decision) error {
	t.Helper()
	ctx := context.Background()
	opts, err := s.approvals.BeginDecision(ctx, id, decision)
	if err != nil {
		return err
	}
	_, err = s.approvals.FinishDecision(ctx, id, opts.Ceremony, s.key.Get(opts.PublicKey.Challenge.String()))
	return err
}

// entries returns the audit entries of kind.
func (s *stack) entries(t *testing.T, kind vocab.Kind) []audit.Entry {
	t.Helper()
	all, err := s.audit.Since(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range all {
		if kind == "" || e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// waitRequest waits until the audit log has a request raised, and returns
// its id.
func (s *stack) waitRequest(t *testing.T) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if es := s.entries(t, vocab.KindApprovalRequested); len(es) > 0 {
			return es[len(es)-1].RequestID
		}
	}
	t.Fatal("no approval request was raised")
	return ""
}

// waitState waits until request id is in state.
func (s *stack) waitState(t *testing.T, id string, state vocab.State) {
	t.Helper()
	var (
		r   *approval.Request
		err error
	)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r, err = s.approvals.Get(context.Background(), id); err == nil && r.State == state {
			return
		}
	}
	t.Fatalf("request %s never became %s: %+v %v", id, state, r, err)
}

// serveHTTP serves the stack's agent listener on 127.0.0.1 at a random
// port, and returns its base URL.
func (s *stack) serveHTTP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	h, closeSessions := s.server.HTTPHandler(base)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closeSessions(ctx)
		srv.Shutdown(ctx)
	})
	return base
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// bearer sets a bearer token on every request, a session's closing DELETE
// too.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func withToken(token string) *http.Client {
	return &http.Client{Transport: bearer{token, http.DefaultTransport}}
}

// connect connects the go-sdk client on version.
func connect(t testing.TB, transport sdk.Transport, version string) *sdk.ClientSession {
	t.Helper()
	// The SSE transport ties its event stream to this context: it must
	// outlive the connect call.
	client := sdk.NewClient(&sdk.Implementation{Name: "countersign-server-test", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), transport, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect (%s): %v", version, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// checkServes lists the tools and makes a routine call.
func checkServes(t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*sdk.Tool{}
	for _, tool := range list.Tools {
		got[tool.Name] = tool
	}
	for _, want := range []string{"get_balance", "transfer", "deploy", "read_secret", "approval_status"} {
		if got[want] == nil {
			t.Errorf("tool %s not listed", want)
		}
	}
	if gb := got["get_balance"]; gb == nil || gb.Annotations == nil || !gb.Annotations.ReadOnlyHint || gb.InputSchema == nil {
		t.Errorf("get_balance is not listed read-only with a schema: %+v", gb)
	}
	res := servertest.CallTool(t, cs, "get_balance", map[string]any{})
	if res.IsError || !strings.Contains(servertest.ResultText(res), "operating") {
		t.Fatalf("get_balance: %s", servertest.ResultText(res))
	}
}

func transferArgs(amount float64) map[string]any {
	return map[string]any{"from": "operating", "to": "Acme Supplies", "amount": amount, "currency": "USD"}
}

// The tools offered are the catalog's, as it changes: clients are told, a
// held tool is not listed but its calls are refused with the reason, and
// a call of a tool not offered is refused and recorded.
func TestToolsFollowTheCatalog(t *testing.T) {
	s := newStack(t, nil)
	changed := make(chan struct{}, 10)
	client := sdk.NewClient(&sdk.Implementation{Name: "countersign-server-test", Version: "1"}, &sdk.ClientOptions{
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) { changed <- struct{}{} },
	})
	cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: s.serveHTTP(t) + "/mcp", MaxRetries: -1},
		&sdk.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	listed := func() map[string]bool {
		t.Helper()
		list, err := cs.ListTools(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, tool := range list.Tools {
			out[tool.Name] = true
		}
		return out
	}
	heardChange := func() {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatal("no notifications/tools/list_changed")
		}
	}
	spec := func(name string, held func(context.Context) error) *tools.Spec {
		return &tools.Spec{Def: mcp.NewTool(name, mcp.WithDescription("a tool of a test source")), Source: "extra", Held: held,
			Prepare: func(context.Context, map[string]any) (*tools.Call, error) { return &tools.Call{Summary: name}, nil },
			Run: func(context.Context, *tools.Call) (*tools.Result, error) {
				return &tools.Result{Content: map[string]any{"ran": name}}, nil
			}}
	}
	const reason = "its listing changed; an admin must accept it"
	if err := s.catalog.Replace("extra", []*tools.Spec{
		spec("extra_new", nil),
		spec("extra_held", func(context.Context) error { return errors.New(reason) }),
	}); err != nil {
		t.Fatal(err)
	}
	heardChange()
	if got := listed(); !got["extra_new"] || got["extra_held"] || !got["get_balance"] {
		t.Errorf("after the catalog changed: %v, want extra_new and not the held extra_held", got)
	}
	res := servertest.CallTool(t, cs, "extra_held", map[string]any{})
	if !res.IsError || !strings.Contains(servertest.ResultText(res), reason) {
		t.Errorf("a held tool's call: %s, want refused with the reason", servertest.ResultText(res))
	}

	if err := s.catalog.Replace("extra", nil); err != nil {
		t.Fatal(err)
	}
	heardChange()
	if got := listed(); got["extra_new"] {
		t.Errorf("a removed tool is still listed: %v", got)
	}
	// A call of a tool not offered is answered by mcp-go before any
	// handler runs; it is recorded all the same.
	if res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "extra_new"}); err == nil && !res.IsError {
		t.Errorf("a removed tool was called: %s", servertest.ResultText(res))
	}
	rejected := s.entries(t, vocab.KindCallRejected)
	if len(rejected) == 0 || rejected[len(rejected)-1].Tool != "extra_new" || rejected[len(rejected)-1].Agent != "anonymous" {
		t.Errorf("the call of a tool not offered was not recorded as rejected: %+v", rejected)
	}
}
