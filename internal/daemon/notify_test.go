package daemon

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

	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/vocab"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// A raised request reaches the webhook of its approvers' role, signed,
// with the server's summary, code and link; a channel for another event
// hears nothing; the log records that the message went out.
func TestRaisedRequestIsSentToItsApproversWebhook(t *testing.T) {
	type hit struct {
		header http.Header
		body   []byte
	}
	hooks := make(chan hit, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- hit{r.Header.Clone(), b}
	}))
	defer hook.Close()
	others := make(chan string, 8)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		others <- r.URL.Path
	}))
	defer other.Close()

	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	t.Setenv("TEST_HOOK_SECRET", secret)
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "127.0.0.1:0"
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		c.Notify = []config.Notify{
			{Type: "webhook", URL: hook.URL, Secret: "${TEST_HOOK_SECRET}", For: []string{"role:treasury"}, Events: config.NotifyEvents()},
			{Type: "ntfy", URL: other.URL + "/approved-only", Events: []string{"approved"}},
		}
	})
	s := startDaemon(t, c, testOptions(t)).Stack()
	cs := streamable(t, c)
	res, text := callTool(t, cs, "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"})
	if res.IsError {
		t.Fatalf("transfer: %s", text)
	}
	var pending struct {
		ID string `json:"auth_req_id"`
	}
	json.Unmarshal([]byte(text), &pending)

	var h hit
	select {
	case h = <-hooks:
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook heard nothing")
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(h.body, h.header); err != nil {
		t.Fatalf("delivery does not verify with the expanded secret: %v", err)
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
	daemontest.WaitFor(t, func() bool { return len(daemontest.Entries(t, s.Audit(), vocab.KindNotifySent)) == 1 })
	e := daemontest.Entries(t, s.Audit(), vocab.KindNotifySent)[0]
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
	if err := s.Audit().Export(context.Background(), &export, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.Export(bytes.NewReader(export.Bytes()), s.Audit().PublicKey(), verify.Options{}); err != nil {
		t.Fatalf("export with notify.sent does not verify: %v", err)
	}
}

// Issue 22, row 10: a payee named to act in Slack (a link labelled like
// ours, an @channel) reaches the channel as quoted text through the real
// server, not as a link or a mention.
func TestHostilePayeeReachesSlackAsText(t *testing.T) {
	texts := make(chan string, 8)
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Text string }
		json.NewDecoder(r.Body).Decode(&body)
		texts <- body.Text
	}))
	defer slack.Close()
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "127.0.0.1:0"
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		c.Notify = []config.Notify{{Type: "slack", URL: slack.URL, Events: []string{"requested"}}}
	})
	startDaemon(t, c, testOptions(t))
	cs := streamable(t, c)
	payee := "Acme <https://evil.example/approve|Open the request> <!channel>"
	if res, text := callTool(t, cs, "transfer", map[string]any{"from": "operating", "to": payee, "amount": 50000, "currency": "USD"}); res.IsError {
		t.Fatalf("transfer: %s", text)
	}
	var text string
	select {
	case text = <-texts:
	case <-time.After(10 * time.Second):
		t.Fatal("slack heard nothing")
	}
	if strings.Contains(text, "<!channel>") || strings.Contains(text, "<https://evil") || strings.Count(text, "<") != 1 {
		t.Errorf("slack text holds a live mention or link:\n%s", text)
	}
	if !strings.Contains(text, "Acme &lt;https://evil.example/approve|Open the request&gt; &lt;!channel&gt;") {
		t.Errorf("the payee is not shown as written:\n%s", text)
	}
}
