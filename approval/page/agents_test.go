package page

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/vocab"
)

// The page's Freeze button: a POST with the CSRF token, no tap, recorded
// with who pressed it (loopback-page on a page without sign-in); without
// the token it is refused and nothing is frozen. Unfreeze is not offered.
func TestPageFreezesAnAgent(t *testing.T) {
	ctx := context.Background()
	h := newHTTPFixture(t)
	r, _ := h.svc.Create(ctx, paymentRequest("alice"))

	if code, e, _ := h.post(t, "/api/agents/agent-1/freeze", []byte(`{}`), func(req *http.Request) { req.Header.Del("X-CSRF-Token") }); code != http.StatusForbidden || e.Check != "csrf" {
		t.Fatalf("freeze without the CSRF token: %d %+v", code, e)
	}
	if fz, _ := h.svc.Frozen(ctx, "agent-1"); fz != nil {
		t.Fatal("frozen without the CSRF token")
	}
	for _, bad := range []string{"Agent-1", "%2A", "a%20b"} {
		if code, _, _ := h.post(t, "/api/agents/"+bad+"/freeze", []byte(`{}`), nil); code != http.StatusNotFound {
			t.Errorf("freeze of %q: %d", bad, code)
		}
	}
	code, e, raw := h.post(t, "/api/agents/agent-1/freeze", []byte(`{"reason":"looks wrong"}`), nil)
	if code != http.StatusOK {
		t.Fatalf("freeze: %d %+v", code, e)
	}
	var out struct {
		Frozen    freeze.View `json:"frozen"`
		Cancelled []string    `json:"cancelled"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Frozen.FrozenBy != approval.LoopbackRevoker || len(out.Cancelled) != 1 || out.Cancelled[0] != r.ID {
		t.Fatalf("freeze answered %s (%v)", raw, err)
	}
	if got, _ := h.svc.Get(ctx, r.ID); got.State != vocab.StateCancelled {
		t.Fatalf("the agent's request is %s", got.State)
	}
	if e, ok := h.rec.Last(vocab.KindAgentFrozen); !ok || e.Agent != "agent-1" || e.Approver != approval.LoopbackRevoker || e.Reason != "frozen: looks wrong" {
		t.Fatalf("agent.frozen: %+v", e)
	}
	if code, e, _ := h.post(t, "/api/agents/agent-1/freeze", []byte(`{}`), nil); code != http.StatusConflict || e.Check != "already_frozen" {
		t.Fatalf("a second freeze: %d %+v", code, e)
	}
	if code, _, _ := h.post(t, "/api/agents/agent-1/unfreeze", []byte(`{}`), nil); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Fatalf("the page offers unfreeze: %d", code)
	}

	resp, err := h.client.Get(h.base + "/api/agents")
	if err != nil {
		t.Fatal(err)
	}
	var agents struct{ Agents []freeze.AgentView }
	json.NewDecoder(resp.Body).Decode(&agents)
	resp.Body.Close()
	if len(agents.Agents) != 1 || agents.Agents[0].Name != "agent-1" || agents.Agents[0].Frozen == nil {
		t.Fatalf("/api/agents: %+v", agents)
	}
	for path, want := range map[string]string{"/": "frozen by loopback-page since", "/requests/" + r.ID: `id="freeze-agent"`} {
		resp, err := h.client.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not show %q", path, want)
		}
	}
}

// On a page that needs a sign-in, Freeze is refused before it and
// recorded with the signed-in approver after.
func TestSignedInApproverFreezes(t *testing.T) {
	p := newTLSPage(t)
	alice := approvaltest.NewSoftKey(t, "localhost", p.base)
	p.enroll(t, "alice", alice)
	if code, _, _ := p.post(t, "/api/agents/agent-1/freeze", map[string]any{}); code != http.StatusUnauthorized {
		t.Fatalf("freeze before sign-in: %d", code)
	}
	if code, c := p.signIn(t, alice); code != http.StatusOK || c == nil {
		t.Fatalf("sign-in: %d", code)
	}
	if code, raw, _ := p.post(t, "/api/agents/agent-1/freeze", map[string]any{}); code != http.StatusOK {
		t.Fatalf("freeze: %d %s", code, raw)
	}
	fz, err := p.svc.Frozen(context.Background(), "agent-1")
	if err != nil || fz == nil || fz.By != "alice" {
		t.Fatalf("frozen %+v, %v: want by alice", fz, err)
	}
	if e, ok := p.rec.Last(vocab.KindAgentFrozen); !ok || e.Approver != "alice" {
		t.Fatalf("agent.frozen: %+v", e)
	}
}
