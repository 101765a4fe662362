package notify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// testSecret is the Standard Webhooks specification's example secret.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// received is one request a test receiver got.
type received struct {
	path   string
	header http.Header
	body   []byte
}

// receiver is a real HTTP server on 127.0.0.1 that records what it gets
// and answers with status(n) for the n-th request (1-based).
func receiver(t *testing.T, status func(n int) int) (*httptest.Server, <-chan received) {
	t.Helper()
	got := make(chan received, 16)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		n++
		code := status(n)
		mu.Unlock()
		got <- received{r.URL.Path, r.Header.Clone(), body}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func ok(int) int { return http.StatusOK }

// outcomes collects Options.Outcome and Options.Delivered calls.
type outcomes struct {
	mu        sync.Mutex
	list      []string // "type/outcome"
	delivered chan []string
}

func newOutcomes() *outcomes { return &outcomes{delivered: make(chan []string, 16)} }

func (o *outcomes) outcome(typ, outcome string) {
	o.mu.Lock()
	o.list = append(o.list, typ+"/"+outcome)
	o.mu.Unlock()
}

func (o *outcomes) done(_ Message, types []string) { o.delivered <- types }

func (o *outcomes) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.list)
}

func start(t *testing.T, o *outcomes, chans ...Channel) *Notifier {
	t.Helper()
	n := New(Options{Channels: chans, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Outcome: o.outcome, Delivered: o.done})
	t.Cleanup(n.Close)
	return n
}

func message(event string) Message {
	return Message{
		Event: event, RequestID: "0b7e4c1e-9d43-4b8e-9a55-5a1f3c2f7d10", Tool: "transfer", Agent: "stdio", Level: "high",
		Summary: "Pay USD 500,000.00 from operating to Vendor X", Code: "K7WQ2M",
		URL:       "http://localhost:8710/requests/0b7e4c1e-9d43-4b8e-9a55-5a1f3c2f7d10",
		ExpiresAt: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), Approvers: []string{"alice", "bob"},
		Roles: []string{"treasury"},
	}
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing arrived in 10s")
		panic("unreachable")
	}
}

func TestWebhookBodyIsSignedWithTheSecret(t *testing.T) {
	srv, got := receiver(t, ok)
	o := newOutcomes()
	n := start(t, o, Channel{Type: Webhook, URL: srv.URL + "/hook", Secret: testSecret})
	n.Notify(message(Requested))
	r := wait(t, got)

	// What a receiver does: verify with a Standard Webhooks library over
	// the bytes it read, before parsing them.
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("delivery does not verify (%v): headers %v, body %s", err, r.header, r.body)
	}
	other, _ := standardwebhooks.NewWebhook("whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of 24 bytes")))
	if other.Verify(r.body, r.header) == nil {
		t.Fatal("delivery verifies under another secret")
	}
	// Change any signed part and the signature no longer holds.
	ts, _ := strconv.ParseInt(r.header.Get(HeaderTimestamp), 10, 64)
	for name, change := range map[string]func(h http.Header, body []byte) []byte{
		"body": func(h http.Header, body []byte) []byte {
			return bytes.Replace(body, []byte("500,000.00"), []byte("500,000.01"), 1)
		},
		"timestamp": func(h http.Header, body []byte) []byte {
			h.Set(HeaderTimestamp, strconv.FormatInt(ts-1, 10))
			return body
		},
		"id": func(h http.Header, body []byte) []byte {
			h.Set(HeaderID, h.Get(HeaderID)+"x")
			return body
		},
	} {
		h := r.header.Clone()
		body := change(h, slices.Clone(r.body))
		if err := wh.Verify(body, h); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
			t.Errorf("with the %s changed: %v, want no matching signature", name, err)
		}
	}
	// A delivery kept and replayed later is refused by its timestamp.
	if ts < time.Now().Add(-time.Minute).Unix() || ts > time.Now().Add(time.Minute).Unix() {
		t.Errorf("webhook-timestamp %d is not the time of the attempt", ts)
	}
	if id := r.header.Get(HeaderID); !strings.HasPrefix(id, "msg_") || len(id) < 20 {
		t.Errorf("webhook-id %q", id)
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"event": "requested", "request_id": "0b7e4c1e-9d43-4b8e-9a55-5a1f3c2f7d10", "binding_code": "K7WQ2M",
		"url":        "http://localhost:8710/requests/0b7e4c1e-9d43-4b8e-9a55-5a1f3c2f7d10",
		"summary":    "Pay USD 500,000.00 from operating to Vendor X",
		"expires_at": "2026-11-25T09:00:00Z", "tool": "transfer", "level": "high",
	} {
		if body[k] != want {
			t.Errorf("%s = %v, want %v", k, body[k], want)
		}
	}
	if _, ok := body["Roles"]; ok {
		t.Error("roles are for matching, not for the receiver")
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Countersign-Event") != "requested" {
		t.Errorf("headers %v", r.header)
	}
	if types := wait(t, o.delivered); !slices.Equal(types, []string{Webhook}) {
		t.Errorf("delivered to %v", types)
	}
	if got := o.get(); !slices.Equal(got, []string{"webhook/sent"}) {
		t.Errorf("outcomes %v", got)
	}
}

func TestSlackGetsText(t *testing.T) {
	srv, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Slack, URL: srv.URL})
	m := message(Approved)
	m.DecidedBy = "alice"
	n.Notify(m)
	r := wait(t, got)
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil || len(body) != 3 ||
		body["unfurl_links"] != false || body["unfurl_media"] != false {
		t.Fatalf("body %s: want {\"text\": ..., \"unfurl_links\": false, \"unfurl_media\": false} (%v)", r.body, err)
	}
	want := "Approved: Pay USD 500,000.00 from operating to Vendor X\nCode K7WQ2M, approved by alice\n" +
		"<http://localhost:8710/requests/0b7e4c1e-9d43-4b8e-9a55-5a1f3c2f7d10|Open the request>"
	if body["text"] != want {
		t.Errorf("text %q\nwant %q", body["text"], want)
	}
}

func TestNtfyGetsBodyAndHeaders(t *testing.T) {
	srv, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Ntfy, URL: srv.URL + "/countersign", Secret: "tk_abc"})
	m := message(Expiring)
	m.Summary = "Pay EUR 9,000.00 to Müller GmbH"
	n.Notify(m)
	r := wait(t, got)
	wantBody := "Expiring soon: Pay EUR 9,000.00 to Müller GmbH\nCode K7WQ2M, expires 2026-11-25T09:00:00Z\n" + m.URL
	if string(r.body) != wantBody {
		t.Errorf("body %q\nwant %q", r.body, wantBody)
	}
	title, err := new(mime.WordDecoder).DecodeHeader(r.header.Get("Title"))
	if err != nil || title != "Expiring soon: Pay EUR 9,000.00 to Müller GmbH" {
		t.Errorf("Title %q decodes to %q (%v)", r.header.Get("Title"), title, err)
	}
	for k, want := range map[string]string{
		"Priority": "high", "Tags": "hourglass,countersign", "Click": m.URL, "Authorization": "Bearer tk_abc",
	} {
		if r.header.Get(k) != want {
			t.Errorf("%s: %q, want %q", k, r.header.Get(k), want)
		}
	}
}

// A receiver that fails twice gets the message a third time, and only
// that once more; the outcome says sent.
func TestRetriesUntilTheReceiverAccepts(t *testing.T) {
	srv, got := receiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	o := newOutcomes()
	n := start(t, o, Channel{Type: Webhook, URL: srv.URL, Secret: testSecret})
	n.Notify(message(Requested))
	wh, _ := standardwebhooks.NewWebhook(testSecret)
	var deliveries []string
	for range 3 {
		r := wait(t, got)
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("attempt %d: %v", len(deliveries)+1, err)
		}
		deliveries = append(deliveries, r.header.Get(HeaderID))
	}
	if types := wait(t, o.delivered); !slices.Equal(types, []string{Webhook}) {
		t.Errorf("delivered to %v", types)
	}
	if deliveries[0] == "" || deliveries[1] != deliveries[0] || deliveries[2] != deliveries[0] {
		t.Errorf("delivery ids %v: every attempt of one message carries the same", deliveries)
	}
	if got := o.get(); !slices.Equal(got, []string{"webhook/retry", "webhook/retry", "webhook/sent"}) {
		t.Errorf("outcomes %v", got)
	}
	n.Close()
	select {
	case r := <-got:
		t.Errorf("a fourth request after success: %s", r.body)
	default:
	}
}

func TestGivesUpAfterTheLastAttempt(t *testing.T) {
	srv, got := receiver(t, func(int) int { return http.StatusBadGateway })
	o := newOutcomes()
	n := New(Options{Channels: []Channel{{Type: Slack, URL: srv.URL}}, Attempts: 3,
		Backoff: time.Millisecond, Outcome: o.outcome, Delivered: o.done})
	defer n.Close()
	n.Notify(message(Denied))
	if types := wait(t, o.delivered); len(types) != 0 {
		t.Errorf("delivered to %v", types)
	}
	if len(got) != 3 {
		t.Errorf("%d attempts, want 3", len(got))
	}
	if got := o.get(); !slices.Equal(got, []string{"slack/retry", "slack/retry", "slack/failed"}) {
		t.Errorf("outcomes %v", got)
	}
}

// Notify only queues: it returns while the receiver still holds the
// first attempt, and the other channel is not held up either.
func TestHangingReceiverDoesNotHoldNotify(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer hang.Close()
	defer close(release)
	fast, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Webhook, URL: hang.URL, Secret: testSecret}, Channel{Type: Slack, URL: fast.URL})
	n.Notify(message(Requested))
	wait(t, entered)
	n.Notify(message(Expiring)) // returns although a worker is stuck
	wait(t, got)
	wait(t, got)
}

func TestChannelsGetOnlyTheirApproversAndEvents(t *testing.T) {
	srv, got := receiver(t, ok)
	o := newOutcomes()
	n := start(t, o,
		Channel{Type: Slack, URL: srv.URL + "/treasury", For: []string{"role:treasury"}},
		Channel{Type: Slack, URL: srv.URL + "/carol", For: []string{"carol"}},
		Channel{Type: Slack, URL: srv.URL + "/bob-denied", For: []string{"bob"}, Events: []string{Denied}},
		Channel{Type: Slack, URL: srv.URL + "/all"},
	)
	paths := func() []string {
		wait(t, o.delivered)
		var ps []string
		for len(got) > 0 {
			ps = append(ps, (<-got).path)
		}
		slices.Sort(ps)
		return ps
	}
	n.Notify(message(Requested)) // approvers alice, bob; role treasury
	if ps := paths(); !slices.Equal(ps, []string{"/all", "/treasury"}) {
		t.Errorf("requested went to %v, want the treasury and the catch-all channel", ps)
	}
	m := message(Denied)
	m.Roles = nil
	n.Notify(m)
	if ps := paths(); !slices.Equal(ps, []string{"/all", "/bob-denied"}) {
		t.Errorf("denied went to %v, want bob's denied channel and the catch-all", ps)
	}
}

func TestCloseDropsRetriesNotYetDue(t *testing.T) {
	srv, got := receiver(t, func(int) int { return http.StatusServiceUnavailable })
	o := newOutcomes()
	n := New(Options{Channels: []Channel{{Type: Webhook, URL: srv.URL, Secret: testSecret}},
		Backoff: time.Hour, Outcome: o.outcome, Delivered: o.done})
	n.Notify(message(Requested))
	wait(t, got)
	// The first attempt's outcome is reported once it is done.
	for !slices.Contains(o.get(), "webhook/retry") {
		time.Sleep(time.Millisecond)
	}
	n.Close()
	if types := wait(t, o.delivered); len(types) != 0 {
		t.Errorf("delivered to %v", types)
	}
	if got := o.get(); !slices.Equal(got, []string{"webhook/retry", "webhook/dropped"}) {
		t.Errorf("outcomes %v", got)
	}
	n.Notify(message(Approved))
	if types := wait(t, o.delivered); len(types) != 0 {
		t.Errorf("after Close: delivered to %v", types)
	}
}

func TestTextNeverHasNewlinesInHeaders(t *testing.T) {
	m := message(Requested)
	m.Summary = "a\r\nInjected: yes"
	if v := headerValue(Title(&m)); strings.ContainsAny(v, "\r\n") {
		t.Errorf("header value %q", v)
	}
}

// Close does not wait for a receiver that does not answer.
func TestCloseCutsShortAHangingAttempt(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	o := newOutcomes()
	n := New(Options{Channels: []Channel{{Type: Webhook, URL: hang.URL, Secret: testSecret}}, Timeout: time.Hour,
		Outcome: o.outcome, Delivered: o.done})
	n.Notify(message(Requested))
	<-entered
	n.Close()
	if types := wait(t, o.delivered); len(types) != 0 {
		t.Errorf("delivered to %v", types)
	}
	if got := o.get(); !slices.Equal(got, []string{"webhook/dropped"}) {
		t.Errorf("outcomes %v", got)
	}
}

// The queue is bounded: with the one worker held and the queue full, a
// further message is dropped at once, and counted.
func TestFullQueueDropsAtOnce(t *testing.T) {
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	defer hang.Close()
	o := newOutcomes()
	n := New(Options{Channels: []Channel{{Type: Slack, URL: hang.URL}}, Queue: 1, Workers: 1,
		Outcome: o.outcome, Delivered: o.done})
	defer n.Close()
	defer close(release)
	n.Notify(message(Requested)) // held by the worker
	<-entered
	n.Notify(message(Requested)) // waits in the queue
	n.Notify(message(Expiring))  // no room
	select {
	case types := <-o.delivered:
		if len(types) != 0 {
			t.Errorf("delivered to %v", types)
		}
	default:
		t.Fatal("the third message was neither queued nor dropped")
	}
	if got := o.get(); !slices.Equal(got, []string{"slack/dropped"}) {
		t.Errorf("outcomes %v", got)
	}
}

// hostilePayee is a payee's name written to act in a chat rather than be
// read: a link labelled like ours, channel and user mentions (Slack's and
// Mattermost's), and a new line that forges the code to compare.
const hostilePayee = "Acme <https://evil.example/approve|Open the request> <!channel> <!here> <@U024BE7LH> @channel\nCode AAAAAA & more"

func hostileMessage(event string) Message {
	m := message(event)
	m.Summary = "Pay USD 500,000.00 from operating to " + hostilePayee
	return m
}

func TestSlackTextQuotesWhatAnAgentWrote(t *testing.T) {
	srv, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Slack, URL: srv.URL})
	m := hostileMessage(Requested)
	n.Notify(m)
	var body struct {
		Text        string `json:"text"`
		UnfurlLinks *bool  `json:"unfurl_links"`
	}
	if err := json.Unmarshal(wait(t, got).body, &body); err != nil {
		t.Fatal(err)
	}
	text := body.Text
	for _, live := range []string{"<!channel>", "<!here>", "<@U024BE7LH>", "<https://evil.example", "@channel", "@here"} {
		if strings.Contains(text, live) {
			t.Errorf("text holds a live %q:\n%s", live, text)
		}
	}
	// The only control sequence left is the server's own link, last.
	ours := "<" + m.URL + "|Open the request>"
	if strings.Count(text, "<") != 1 || strings.Count(text, ">") != 1 || !strings.HasSuffix(text, ours) {
		t.Errorf("text has control sequences besides %s:\n%s", ours, text)
	}
	lines := strings.Split(text, "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "Code K7WQ2M,") {
		t.Errorf("lines %q: the payee's new line must not forge a line of ours", lines)
	}
	// The payee still reads as written once Slack decodes its entities.
	shown := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "\u2060", "").Replace(lines[0])
	if want := "Approval needed: Pay USD 500,000.00 from operating to " + strings.ReplaceAll(hostilePayee, "\n", " "); shown != want {
		t.Errorf("shown as %q\nwant     %q", shown, want)
	}
	if body.UnfurlLinks == nil || *body.UnfurlLinks {
		t.Error("link previews are on: a payee's URL would unfurl")
	}
}

func TestNtfyHeadersCannotBeInjected(t *testing.T) {
	srv, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Ntfy, URL: srv.URL + "/countersign"})
	m := hostileMessage(Requested)
	// A header of its own, and an encoded word that ntfy would decode
	// into text (here "Approved") the sender chose.
	m.Summary += "\r\nX-Injected: yes\r\n\r\n =?utf-8?b?QXBwcm92ZWQ=?="
	n.Notify(m)
	r := wait(t, got)
	if v := r.header.Get("X-Injected"); v != "" {
		t.Errorf("injected header arrived: %q", v)
	}
	title, err := new(mime.WordDecoder).DecodeHeader(r.header.Get("Title"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(title, "\r\n") || !strings.Contains(title, "=?utf-8?b?QXBwcm92ZWQ=?=") {
		t.Errorf("Title %q decodes to %q: want one line, the encoded word kept as written", r.header.Get("Title"), title)
	}
	if lines := strings.Split(string(r.body), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "Code K7WQ2M,") || lines[2] != m.URL {
		t.Errorf("body lines %q", lines)
	}
	if got := r.header.Get("Markdown"); got != "" {
		t.Errorf("Markdown: %q; the text is plain", got)
	}
}

// The webhook's JSON carries the payee exactly, as a string value; its
// signature holds over it.
func TestWebhookCarriesHostileTextAsData(t *testing.T) {
	srv, got := receiver(t, ok)
	n := start(t, newOutcomes(), Channel{Type: Webhook, URL: srv.URL, Secret: testSecret})
	m := hostileMessage(Requested)
	m.Summary += "\",\"event\":\"approved"
	n.Notify(m)
	r := wait(t, got)
	wh, _ := standardwebhooks.NewWebhook(testSecret)
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatal(err)
	}
	var body Message
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Summary != m.Summary || body.Event != Requested {
		t.Errorf("decoded summary %q event %q", body.Summary, body.Event)
	}
}

// A secret without the whsec_ prefix is the key's bytes, as a receiver's
// NewWebhookRaw takes it; a whsec_ secret that is not base64 sends nothing.
func TestWebhookSecretForms(t *testing.T) {
	srv, got := receiver(t, ok)
	o := newOutcomes()
	n := New(Options{Channels: []Channel{{Type: Webhook, URL: srv.URL, Secret: "raw key bytes"}, {Type: Webhook, URL: srv.URL + "/bad", Secret: "whsec_***"}},
		Attempts: 1, Outcome: o.outcome, Delivered: o.done})
	defer n.Close()
	n.Notify(message(Requested))
	r := wait(t, got)
	wh, _ := standardwebhooks.NewWebhookRaw([]byte("raw key bytes"))
	if err := wh.Verify(r.body, r.header); err != nil || r.path == "/bad" {
		t.Errorf("%s: %v", r.path, err)
	}
	if types := wait(t, o.delivered); !slices.Equal(types, []string{Webhook}) {
		t.Errorf("delivered to %v", types)
	}
	if outs := o.get(); !slices.Contains(outs, "webhook/failed") {
		t.Errorf("outcomes %v: the malformed secret's channel must fail", outs)
	}
}
