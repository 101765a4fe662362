// Package notify tells people about approval requests, so that a request
// does not wait for a page nobody has open: when one is raised, approved,
// denied, or is about to expire, a message goes to each configured channel
// whose approvers the request concerns.
//
// Channels:
//
//   - webhook: POST of a JSON [Message] (Content-Type: application/json),
//     signed by the Standard Webhooks scheme (https://www.standardwebhooks.com):
//     webhook-id (the same for every attempt of one message, so a receiver
//     drops a retry it already handled), webhook-timestamp (Unix seconds of
//     the attempt) and webhook-signature ("v1," and the base64
//     HMAC-SHA256 of "id.timestamp.body" under the channel's whsec_
//     secret). A receiver verifies with any Standard Webhooks library,
//     which also refuses a timestamp more than five minutes off: a
//     captured delivery cannot be replayed later. X-Countersign-Event
//     repeats the event.
//   - slack: POST {"text": ...}, the shape of Slack, Mattermost and
//     Rocket.Chat incoming webhooks, with link previews off.
//   - ntfy: POST of the text to the topic URL with the headers Title,
//     Priority (high for requested and expiring), Tags and Click (the
//     request's page); the secret, if any, as Authorization: Bearer.
//
// Text that an agent or an upstream can shape (a payee in the summary, a
// tool's name) is escaped for each channel, so that it reads as text and
// never acts: on one line always (no forged "Code" line); for Slack,
// & < > as Slack's formatting rules ask, so that no <!channel>, <@U...>
// or <url|label> an agent wrote is live, and every @ followed by an
// invisible word joiner, so that Mattermost and Rocket.Chat, which turn
// a plain @channel into a mention, do not; for ntfy headers, one line,
// RFC 2047 encoded when not plain ASCII or when it looks encoded already.
// The webhook's JSON encoding is its escaping. Slack's * _ ~ ` styling is
// left alone: it cannot add a link, a mention or a line, and names such
// as read_secret are common.
//
// Every message carries only what the server itself wrote: the request's
// summary (e.g. "Pay USD 500,000.00 from operating to Vendor X"), the
// binding code, the expiry and the link to the request's page. Never the
// page's full display, which for some tools quotes arguments, never
// argument values, never secrets.
//
// Delivery never delays a tool call: [Notifier.Notify] only queues. A fixed
// pool of workers sends, each attempt bounded by a timeout; a failed
// attempt (an error, or a status other than 2xx) is retried with capped
// exponential backoff, and a message still undelivered after the last
// attempt is logged and dropped. A full queue drops the message at once.
// Each outcome is reported to [Options.Outcome] (the metrics) and logged;
// URLs and secrets are never logged.
package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Events.
const (
	Requested = "requested"
	Approved  = "approved"
	Denied    = "denied"
	Expiring  = "expiring"
)

// Channel types.
const (
	Webhook = "webhook"
	Slack   = "slack"
	Ntfy    = "ntfy"
)

// Outcomes reported to [Options.Outcome].
const (
	OutcomeSent    = "sent"    // delivered (2xx), perhaps after retries
	OutcomeRetry   = "retry"   // an attempt failed; another follows
	OutcomeFailed  = "failed"  // every attempt failed; given up
	OutcomeDropped = "dropped" // the queue was full, or the notifier closed
)

// The Standard Webhooks headers of a webhook delivery.
const (
	HeaderID        = standardwebhooks.HeaderWebhookID
	HeaderTimestamp = standardwebhooks.HeaderWebhookTimestamp
	HeaderSignature = standardwebhooks.HeaderWebhookSignature
)

// Message is what a channel is told; a webhook receives it as JSON.
type Message struct {
	Event     string    `json:"event"` // requested | approved | denied | expiring
	RequestID string    `json:"request_id"`
	Tool      string    `json:"tool"`
	Agent     string    `json:"agent"`
	Level     string    `json:"level"`   // high | critical
	Summary   string    `json:"summary"` // the server's words, not the agent's
	Code      string    `json:"binding_code"`
	URL       string    `json:"url"` // the request's page
	ExpiresAt time.Time `json:"expires_at"`
	// Approvers are the request's eligible approver ids; DecidedBy says
	// who approved (comma-separated) or denied.
	Approvers []string `json:"approvers"`
	DecidedBy string   `json:"decided_by,omitempty"`
	// Roles of the eligible approvers, only to match channels' for.
	Roles []string `json:"-"`
}

// Channel is one configured destination, its secret already expanded.
type Channel struct {
	Type string
	URL  string
	// Secret is a webhook's Standard Webhooks secret, whsec_ and base64
	// (another string is used as the key's bytes), or an ntfy token.
	Secret string
	For    []string // approver ids and role:NAME; empty: every request
	Events []string // empty: all
}

// matches reports whether the channel wants m.
func (c *Channel) matches(m *Message) bool {
	if len(c.Events) > 0 && !slices.Contains(c.Events, m.Event) {
		return false
	}
	if len(c.For) == 0 {
		return true
	}
	for _, f := range c.For {
		if role, ok := strings.CutPrefix(f, "role:"); ok {
			if slices.Contains(m.Roles, role) {
				return true
			}
		} else if slices.Contains(m.Approvers, f) {
			return true
		}
	}
	return false
}

// Options configure a [Notifier]. Zero values get the defaults noted.
type Options struct {
	Channels []Channel
	Client   *http.Client  // default: a client without its own timeout
	Timeout  time.Duration // per attempt; default 10s
	Attempts int           // per message and channel; default 5
	// Backoff before the second attempt, doubling up to MaxBackoff;
	// defaults 1s and 30s.
	Backoff, MaxBackoff time.Duration
	Queue               int // messages waiting to be sent; default 1024
	Workers             int // concurrent deliveries; default 4
	Logger              *slog.Logger
	// Outcome, if set, is told the outcome of every attempt (the metrics).
	Outcome func(channelType, outcome string)
	// Delivered, if set, is called once per message whose delivery to
	// every matching channel has ended, with the types of the channels
	// that received it (each type once, in configuration order; empty if
	// none did).
	Delivered func(m Message, channelTypes []string)
}

// Notifier queues and delivers messages. Its methods are safe for
// concurrent use.
type Notifier struct {
	opts  Options
	queue chan *job

	// ctx ends at Close, cutting attempts short so shutdown is not held
	// up by a receiver that does not answer.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	timers map[*job]*time.Timer // retries waiting for their time
	stop   chan struct{}
	wg     sync.WaitGroup
}

// job is one message to one channel.
type job struct {
	m        *Message
	body     []byte // the webhook JSON, shared by every attempt
	ch       *Channel
	config   int // index of ch in Options.Channels: notify[config] in mcp.yaml
	idx      int // of ch among the message's matching channels
	delivery string
	attempt  int
	batch    *batch
}

// batch tracks one message's deliveries, for Options.Delivered.
type batch struct {
	mu      sync.Mutex
	left    int
	ok      []bool // by channel index among the matching ones
	m       Message
	matched []*Channel
}

// New starts the workers. Close stops them.
func New(opts Options) *Notifier {
	opts.Channels = slices.Clone(opts.Channels)
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{opts: opts, ctx: ctx, cancel: cancel, queue: make(chan *job, opts.Queue), timers: map[*job]*time.Timer{}, stop: make(chan struct{})}
	for range opts.Workers {
		n.wg.Add(1)
		go n.work()
	}
	return n
}

// Notify queues m for every channel that wants it and returns at once.
func (n *Notifier) Notify(m Message) {
	var matched []*Channel
	var config []int
	for i := range n.opts.Channels {
		if c := &n.opts.Channels[i]; c.matches(&m) {
			matched = append(matched, c)
			config = append(config, i)
		}
	}
	if len(matched) == 0 {
		return
	}
	body, err := json.Marshal(&m)
	if err != nil {
		n.opts.Logger.Error("notify: encoding message", "event", m.Event, "request", m.RequestID, "err", err)
		return
	}
	b := &batch{left: len(matched), ok: make([]bool, len(matched)), m: m, matched: matched}
	for i, c := range matched {
		j := &job{m: &b.m, body: body, ch: c, config: config[i], idx: i, delivery: newDeliveryID(), attempt: 1, batch: b}
		if err := n.enqueue(j); err != nil {
			n.end(j, OutcomeDropped, err)
		}
	}
}

// enqueue hands j to the workers without waiting. The caller ends j if it
// cannot: end may call Options.Delivered, which must not run under n.mu.
func (n *Notifier) enqueue(j *job) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("notifier closed")
	}
	select {
	case n.queue <- j:
		return nil
	default:
		return errors.New("queue full")
	}
}

// Close stops the workers and cuts short the attempts under way; messages
// not yet delivered are dropped (and logged).
func (n *Notifier) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	close(n.stop)
	var stopped []*job
	for j, t := range n.timers {
		if t.Stop() {
			stopped = append(stopped, j)
		}
	}
	n.timers = nil
	n.mu.Unlock()
	n.cancel()
	for _, j := range stopped {
		n.end(j, OutcomeDropped, errors.New("notifier closed before the retry"))
	}
	n.wg.Wait()
	for {
		select {
		case j := <-n.queue:
			n.end(j, OutcomeDropped, errors.New("notifier closed"))
		default:
			return
		}
	}
}

func (n *Notifier) work() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case j := <-n.queue:
			n.attempt(j)
		}
	}
}

// attempt sends j once and ends it or schedules its retry.
func (n *Notifier) attempt(j *job) {
	err := n.send(j)
	if err == nil {
		n.end(j, OutcomeSent, nil)
		return
	}
	if n.ctx.Err() != nil {
		n.end(j, OutcomeDropped, errors.New("notifier closed during the attempt"))
		return
	}
	if j.attempt >= n.opts.Attempts {
		n.end(j, OutcomeFailed, err)
		return
	}
	n.report(j, OutcomeRetry, err)
	delay := n.opts.Backoff << (j.attempt - 1)
	if delay > n.opts.MaxBackoff || delay <= 0 {
		delay = n.opts.MaxBackoff
	}
	j.attempt++
	// The retry waits in a timer, not in a worker, so one dead receiver
	// does not hold up the others' messages.
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.end(j, OutcomeDropped, errors.New("notifier closed before the retry"))
		return
	}
	n.timers[j] = time.AfterFunc(delay, func() {
		n.mu.Lock()
		closed := n.timers == nil // Close ran after this timer fired
		delete(n.timers, j)
		n.mu.Unlock()
		if closed {
			n.end(j, OutcomeDropped, errors.New("notifier closed before the retry"))
		} else if err := n.enqueue(j); err != nil {
			n.end(j, OutcomeDropped, fmt.Errorf("at the retry: %w", err))
		}
	})
	n.mu.Unlock()
}

// report logs and counts one attempt's outcome. The channel is named by
// its place in the config (notify[2]) and type, never its URL: a Slack or
// ntfy URL is itself a credential.
func (n *Notifier) report(j *job, outcome string, err error) {
	if n.opts.Outcome != nil {
		n.opts.Outcome(j.ch.Type, outcome)
	}
	args := []any{"channel", fmt.Sprintf("notify[%d]", j.config), "type", j.ch.Type,
		"event", j.m.Event, "request", j.m.RequestID, "attempt", j.attempt, "outcome", outcome}
	switch outcome {
	case OutcomeSent:
		n.opts.Logger.Info("notification sent", args...)
	case OutcomeRetry:
		n.opts.Logger.Warn("notification attempt failed", append(args, "err", err)...)
	default:
		n.opts.Logger.Error("notification not delivered", append(args, "err", err)...)
	}
}

// end records j's final outcome and, when it was the message's last
// delivery, tells Options.Delivered.
func (n *Notifier) end(j *job, outcome string, err error) {
	n.report(j, outcome, err)
	b := j.batch
	b.mu.Lock()
	b.ok[j.idx] = outcome == OutcomeSent
	b.left--
	done := b.left == 0
	b.mu.Unlock()
	if !done || n.opts.Delivered == nil {
		return
	}
	var types []string
	for i, c := range b.matched {
		if b.ok[i] && !slices.Contains(types, c.Type) {
			types = append(types, c.Type)
		}
	}
	n.opts.Delivered(b.m, types)
}

// errStatus is a receiver's non-2xx answer.
type errStatus struct{ code int }

func (e errStatus) Error() string { return fmt.Sprintf("receiver answered %d", e.code) }

// send makes one attempt.
func (n *Notifier) send(j *job) error {
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.Timeout)
	defer cancel()
	req, err := n.request(ctx, j)
	if err != nil {
		return err
	}
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		// The URL may hold a token (Slack, ntfy): keep only the cause.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errStatus{resp.StatusCode}
	}
	return nil
}

// request builds the channel's HTTP request for one attempt.
func (n *Notifier) request(ctx context.Context, j *job) (*http.Request, error) {
	m := j.m
	switch j.ch.Type {
	case Webhook:
		wh, err := webhookSigner(j.ch.Secret)
		if err != nil {
			return nil, err
		}
		// Signed at each attempt: the timestamp is the attempt's, so a
		// receiver's freshness check holds for retries too.
		now := time.Now()
		sig, err := wh.Sign(j.delivery, now, j.body)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.ch.URL, bytes.NewReader(j.body))
		if err != nil {
			return nil, errors.New("bad channel URL")
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderID, j.delivery)
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		req.Header.Set(HeaderSignature, sig)
		req.Header.Set("X-Countersign-Event", m.Event)
		return req, nil
	case Slack:
		body, err := json.Marshal(slackPayload{Text: slackText(m)})
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.ch.URL, bytes.NewReader(body))
		if err != nil {
			return nil, errors.New("bad channel URL")
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	case Ntfy:
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.ch.URL, strings.NewReader(Text(m)))
		if err != nil {
			return nil, errors.New("bad channel URL")
		}
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		req.Header.Set("Title", headerValue(Title(m)))
		req.Header.Set("Priority", ntfyPriority(m.Event))
		req.Header.Set("Tags", ntfyTags(m.Event))
		req.Header.Set("Click", m.URL)
		if j.ch.Secret != "" {
			req.Header.Set("Authorization", "Bearer "+j.ch.Secret)
		}
		return req, nil
	}
	return nil, fmt.Errorf("unknown channel type %q", j.ch.Type)
}

// Title is the one-line headline of m, as plain text.
func Title(m *Message) string { return title(m, oneLine) }

func title(m *Message, quote func(string) string) string {
	summary := quote(m.Summary)
	switch m.Event {
	case Requested:
		return "Approval needed: " + summary
	case Approved:
		return "Approved: " + summary
	case Denied:
		return "Denied: " + summary
	case Expiring:
		return "Expiring soon: " + summary
	}
	return quote(m.Event) + ": " + summary
}

// Text is the body of an ntfy message: the headline, the code to compare
// on the page, who decided or until when it waits, and the link.
func Text(m *Message) string { return text(m, oneLine, oneLine) }

// text lays out the message with quote applied to every value and link to
// the request's page.
func text(m *Message, quote, link func(string) string) string {
	var b strings.Builder
	b.WriteString(title(m, quote))
	b.WriteString("\nCode " + quote(m.Code))
	switch m.Event {
	case Approved:
		b.WriteString(", approved by " + quote(m.DecidedBy))
	case Denied:
		b.WriteString(", denied by " + quote(m.DecidedBy))
	default:
		b.WriteString(", expires " + m.ExpiresAt.UTC().Format(time.RFC3339))
	}
	b.WriteString("\n" + link(m.URL))
	return b.String()
}

// slackPayload is an incoming-webhook message. Previews are off: a link
// in a payee's name must not unfurl into a card that looks like ours.
type slackPayload struct {
	Text        string `json:"text"`
	UnfurlLinks bool   `json:"unfurl_links"`
	UnfurlMedia bool   `json:"unfurl_media"`
}

// slackText is the text in Slack's mrkdwn, the link to the request in its
// <url|label> form, which Mattermost and Rocket.Chat also render.
func slackText(m *Message) string {
	return text(m, slackEscape, func(u string) string {
		return "<" + slackURL.Replace(u) + "|Open the request>"
	})
}

// slackEscape makes s plain text in Slack mrkdwn. Slack asks for & < > to
// be sent as &amp; &lt; &gt;; after that nothing s holds is a link, a
// mention or a command (<!channel>, <@U123>, <https://...|label>). The
// word joiner after @ keeps Mattermost and Rocket.Chat, which also mention
// on a plain @channel or @name, from doing so.
func slackEscape(s string) string {
	return slackReplacer.Replace(oneLine(s))
}

var slackReplacer = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "@", "@\u2060")

// slackURL keeps a URL inside <url|label>: the characters that would end
// it are percent-encoded.
var slackURL = strings.NewReplacer("<", "%3C", ">", "%3E", "|", "%7C", " ", "%20")

// oneLine puts s on one line: control characters, line and paragraph
// separators and bidirectional controls become spaces, so that a value
// cannot start a line of its own (a forged "Code ..." line) or reorder
// what follows it.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) || unicode.Is(unicode.Bidi_Control, r) {
			return ' '
		}
		return r
	}, s)
}

func ntfyPriority(event string) string {
	if event == Requested || event == Expiring {
		return "high"
	}
	return "default"
}

func ntfyTags(event string) string {
	switch event {
	case Approved:
		return "white_check_mark,countersign"
	case Denied:
		return "x,countersign"
	case Expiring:
		return "hourglass,countersign"
	}
	return "key,countersign"
}

// headerValue puts s on one header line: control characters become
// spaces, and text that is not plain ASCII (a currency sign, a payee's
// name) is RFC 2047 encoded, which ntfy decodes. So is ASCII that holds
// "=?", which ntfy would otherwise decode as an encoded word of the
// sender's choosing.
func headerValue(s string) string {
	s = oneLine(s)
	if enc := mime.BEncoding.Encode("utf-8", s); enc != s || !strings.Contains(s, "=?") {
		return enc
	}
	return "=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}

// webhookSigner signs with a Standard Webhooks secret (whsec_ and base64,
// what config accepts); any other string is taken as the key's bytes.
func webhookSigner(secret string) (*standardwebhooks.Webhook, error) {
	if !strings.HasPrefix(secret, "whsec_") {
		return standardwebhooks.NewWebhookRaw([]byte(secret))
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, errors.New("webhook secret: whsec_ is not followed by base64")
	}
	return wh, nil
}

// newDeliveryID is a message's webhook-id, unique per message and
// channel and kept across retries.
func newDeliveryID() string {
	var b [12]byte
	rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}
