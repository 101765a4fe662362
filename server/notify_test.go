package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// heard is what a waiting caller's client was told.
type heard struct {
	mu       sync.Mutex
	progress []*sdk.ProgressNotificationParams
	logged   []string
	elicited []string
}

func (h *heard) options() *sdk.ClientOptions {
	return &sdk.ClientOptions{
		Capabilities: &sdk.ClientCapabilities{Elicitation: &sdk.ElicitationCapabilities{URL: &sdk.URLElicitationCapabilities{}}},
		ProgressNotificationHandler: func(_ context.Context, r *sdk.ProgressNotificationClientRequest) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.progress = append(h.progress, r.Params)
		},
		LoggingMessageHandler: func(_ context.Context, r *sdk.LoggingMessageRequest) {
			b, _ := json.Marshal(r.Params.Data)
			h.mu.Lock()
			defer h.mu.Unlock()
			h.logged = append(h.logged, string(b))
		},
		ElicitationHandler: func(_ context.Context, r *sdk.ElicitRequest) (*sdk.ElicitResult, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.elicited = append(h.elicited, r.Params.URL)
			return &sdk.ElicitResult{Action: "accept"}, nil
		},
	}
}

func (h *heard) beats() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.progress)
}

// A call that waits for a human tells its caller where to approve it: a
// log message, progress heartbeats that only go up, and, where the client
// can take it (2025-11-25 on Streamable HTTP), URL elicitation. Under
// 2026-07-28 a server sends no requests.
func TestWaitingCallerHearsWhereToApprove(t *testing.T) {
	for _, version := range protocolVersions {
		t.Run(version, func(t *testing.T) {
			s := newStack(t, nil)
			h := &heard{}
			client := sdk.NewClient(&sdk.Implementation{Name: "countersign-server-test", Version: "1"}, h.options())
			cs, err := client.Connect(t.Context(), &sdk.StreamableClientTransport{Endpoint: s.serveHTTP(t) + "/mcp", MaxRetries: -1},
				&sdk.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cs.Close() })
			// 2026-07-28 has no logging/setLevel; there progress carries
			// the URL alone.
			old := version == "2025-11-25"
			if old {
				if err := cs.SetLoggingLevel(t.Context(), &sdk.SetLoggingLevelParams{Level: "info"}); err != nil {
					t.Fatal(err)
				}
			}
			results := make(chan *sdk.CallToolResult, 1)
			go func() {
				params := &sdk.CallToolParams{Name: "transfer", Arguments: transferArgs(50000)}
				params.SetProgressToken("t1")
				res, err := cs.CallTool(context.Background(), params)
				if err != nil {
					t.Errorf("waiting transfer: %v", err)
				}
				results <- res
			}()
			id := s.waitRequest(t)
			waitFor(t, "three heartbeats", func() bool { return h.beats() >= 3 })
			if err := s.decide(t, id, "approve"); err != nil {
				t.Fatal(err)
			}
			if res := <-results; res == nil || res.IsError {
				t.Fatalf("approved transfer: %+v", res)
			}

			h.mu.Lock()
			defer h.mu.Unlock()
			r, err := s.approvals.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			// Of transfer's approvers (role:treasury) only alice has a key.
			who := "waiting for approval by Alice Example [can approve now; still to enroll a security key: Bob Example] at "
			last := 0.0
			for _, p := range h.progress {
				if !strings.Contains(p.Message, who) {
					t.Errorf("progress %q does not say who can approve now apart from who must enroll:\n%s", p.Message, who)
				}
				if !strings.Contains(p.Message, "waiting for approval by") || !strings.Contains(p.Message, "code "+r.Code) ||
					!strings.Contains(p.Message, "/requests/"+id) {
					t.Errorf("progress does not say where to approve: %q", p.Message)
				}
				if p.Progress <= last {
					t.Errorf("progress went from %v to %v; it must increase", last, p.Progress)
				}
				last = p.Progress
			}
			if old && len(h.logged) == 0 || len(h.logged) > 0 && !strings.Contains(h.logged[0], `"approval_url":"`+r.URL+`"`) {
				t.Errorf("no log message with the approval URL %s: %q", r.URL, h.logged)
			}
			if want := `"waiting_for":"Alice Example [can approve now; still to enroll a security key: Bob Example]"`; old && !strings.Contains(h.logged[0], want) {
				t.Errorf("the log message %q lacks %s", h.logged[0], want)
			}
			if got := len(h.elicited) > 0; got != old {
				t.Errorf("URL elicitation sent: %v, want %v (%q)", got, old, h.elicited)
			}
			if old && h.elicited[0] != r.URL {
				t.Errorf("elicited URL %q, want the request's page %s", h.elicited[0], r.URL)
			}
		})
	}
}
