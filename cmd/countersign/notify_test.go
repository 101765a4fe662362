package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/notify"
)

// A raised request reaches the webhook of its approvers' role, signed,
// with the server's summary, code and link; a channel for another event
// hears nothing; the log records that the message went out.
func TestRaisedRequestIsSentToItsApproversWebhook(t *testing.T) {
	type hit struct {
		sig  string
		body []byte
	}
	hooks := make(chan hit, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- hit{r.Header.Get(notify.SignatureHeader), b}
	}))
	defer hook.Close()
	others := make(chan string, 8)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		others <- r.URL.Path
	}))
	defer other.Close()

	t.Setenv("TEST_HOOK_SECRET", "s3cret")
	c := testConfig(t, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		c.Notify = []config.Notify{
			{Type: "webhook", URL: hook.URL, Secret: "${TEST_HOOK_SECRET}", For: []string{"role:treasury"}, Events: config.NotifyEvents},
			{Type: "ntfy", URL: other.URL + "/approved-only", Events: []string{"approved"}},
		}
	})
	s, base := startHTTP(t, c)
	cs := streamable(t, base)
	res := callTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"})
	if res.IsError {
		t.Fatalf("transfer: %s", resultText(res))
	}
	var pending struct {
		ID string `json:"auth_req_id"`
	}
	json.Unmarshal([]byte(resultText(res)), &pending)

	var h hit
	select {
	case h = <-hooks:
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook heard nothing")
	}
	if !notify.Verify("s3cret", h.body, h.sig) {
		t.Fatalf("signature %q does not verify with the expanded secret", h.sig)
	}
	var msg notify.Message
	if err := json.Unmarshal(h.body, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Event != "requested" || msg.RequestID != pending.ID || len(msg.Code) != 6 ||
		!strings.HasSuffix(msg.URL, "/requests/"+pending.ID) || !strings.Contains(msg.Summary, "Acme Supplies") ||
		strings.Contains(msg.Summary, msg.Code) || msg.ExpiresAt.IsZero() {
		t.Errorf("message %+v", msg)
	}
	waitFor(t, func() bool { return len(entries(t, s, audit.KindNotifySent)) == 1 })
	e := entries(t, s, audit.KindNotifySent)[0]
	if e.RequestID != pending.ID || e.Reason != "requested sent to webhook" || strings.Contains(e.Reason, hook.URL) {
		t.Errorf("notify.sent entry %+v", e)
	}
	select {
	case p := <-others:
		t.Errorf("the approved-only channel got %s", p)
	default:
	}
	// The entry is part of a log that still verifies.
	var export bytes.Buffer
	if err := s.audit.Export(context.Background(), &export, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(export.Bytes()), s.audit.PublicKey(), audit.VerifyOptions{}); err != nil {
		t.Fatalf("export with notify.sent does not verify: %v", err)
	}
}
