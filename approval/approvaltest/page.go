package approvaltest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Page drives the approver page's JSON endpoints as its JavaScript does,
// with a SoftKey instead of a browser: the real listener, Host and Origin
// checks, the double-submit CSRF token. It suits tests of a real binary
// that approve many requests, where Chromium would cost too much.
type Page struct {
	// Addr is where the page listens (127.0.0.1:PORT); requests are sent
	// there whatever host the URLs name.
	Addr string
	// Origin is a configured origin (http://localhost:8710); it is the
	// Origin header and, through the keys, the origin the assertions name.
	Origin string

	client *http.Client
	csrf   string
}

// NewPage returns a page client for the listener at addr, speaking as
// origin.
func NewPage(addr, origin string) *Page { return NewPageFrom(addr, origin, nil) }

// NewPageFrom is NewPage connecting from the local address from (nil: any),
// so that a load test can be many visitors at once (127.0.0.2, 127.0.0.3,
// ...) as the page's per-address limits see them.
func NewPageFrom(addr, origin string, from net.IP) *Page {
	tok := make([]byte, 32)
	rand.Read(tok)
	dialer := &net.Dialer{}
	if from != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: from}
	}
	return &Page{
		Addr: addr, Origin: origin, csrf: base64.RawURLEncoding.EncodeToString(tok),
		client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			}},
		},
	}
}

// NewPageWithClient is NewPage over client, whose cookies (a session
// begun through the identity provider) go with every request; client
// must reach the page at origin.
func NewPageWithClient(client *http.Client, origin string) *Page {
	p := NewPage("", origin)
	p.client = client
	return p
}

// EnrollSelf asks the page for a self-service enrollment link (the
// session of a person signed in through the identity provider) and
// registers key through it, as their first key. It returns the link.
func (p *Page) EnrollSelf(key *SoftKey) (string, error) {
	var out struct {
		URL string `json:"url"`
	}
	if err := p.do(http.MethodPost, "/api/self-enroll", struct{}{}, &out); err != nil {
		return "", err
	}
	return out.URL, p.Enroll(out.URL, key)
}

// Error is a refusal from the page: its status, the check that refused
// and the message.
type Error struct {
	Status int
	Check  string
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("approver page: %d %s: %s", e.Status, e.Check, e.Msg)
}

func (p *Page) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.Origin+path, rd)
	if err != nil {
		return err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", p.Origin)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("X-CSRF-Token", p.csrf)
		req.AddCookie(&http.Cookie{Name: "countersign_csrf", Value: p.csrf})
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Check string }
		json.Unmarshal(raw, &e)
		return &Error{Status: resp.StatusCode, Check: e.Check, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// Enroll registers key through a one-time enrollment link (its last path
// segment is the token), as the approver's first key.
func (p *Page) Enroll(link string, key *SoftKey) error {
	u, err := url.Parse(link)
	if err != nil {
		return err
	}
	token := u.Path[strings.LastIndex(u.Path, "/")+1:]
	var begin struct {
		Ceremony  string          `json:"ceremony"`
		Step      string          `json:"step"`
		PublicKey json.RawMessage `json:"publicKey"`
	}
	if err := p.do(http.MethodPost, "/api/enroll/"+token+"/begin", struct{}{}, &begin); err != nil {
		return err
	}
	if begin.Step != "create" {
		return fmt.Errorf("approver page: enrollment step %q; Enroll registers first keys only", begin.Step)
	}
	cred, err := key.Register(begin.PublicKey)
	if err != nil {
		return err
	}
	return p.do(http.MethodPost, "/api/enroll/"+token+"/finish",
		map[string]any{"ceremony": begin.Ceremony, "credential": json.RawMessage(cred)}, nil)
}

// Request is the page's view of a request (GET /api/requests/ID).
type Request struct {
	ID        string      `json:"id"`
	Tool      string      `json:"tool"`
	State     vocab.State `json:"state"`
	Code      string      `json:"code"` // the binding code the agent is shown too
	Reason    string      `json:"reason"`
	DecidedBy string      `json:"decidedBy"`
	Approvals []string    `json:"approvals"`
	Quorum    int         `json:"quorum"`
	Level     string      `json:"level"`
	Display   string      `json:"display"` // the text the key signs over
}

// Get reads a request as the page shows it.
func (p *Page) Get(id string) (*Request, error) {
	var r Request
	if err := p.do(http.MethodGet, "/api/requests/"+url.PathEscape(id), nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Pending lists the ids of the requests waiting for a decision.
func (p *Page) Pending() ([]string, error) {
	var list struct {
		Pending []Request `json:"pending"`
	}
	if err := p.do(http.MethodGet, "/api/requests", nil, &list); err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range list.Pending {
		ids = append(ids, r.ID)
	}
	return ids, nil
}

// Decide taps Approve or Deny ("approve" | "deny") on a request with key
// and returns the request as the page then shows it.
func (p *Page) Decide(id, decision string, key *SoftKey) (*Request, error) {
	return p.decide(id, map[string]any{"decision": decision}, key)
}

// decide begins a decision ceremony with body, signs its challenge with
// key, and finishes it.
func (p *Page) decide(id string, body any, key *SoftKey) (*Request, error) {
	ceremony, challenge, err := p.begin(id, body)
	if err != nil {
		return nil, err
	}
	return p.FinishDecision(id, ceremony, key.Get(challenge))
}

// BeginDecision is the first half of a tap on Approve or Deny: the page
// asks for the ceremony whose challenge the key then signs.
func (p *Page) BeginDecision(id, decision string) (ceremony, challenge string, err error) {
	return p.begin(id, map[string]any{"decision": decision})
}

func (p *Page) begin(id string, body any) (ceremony, challenge string, err error) {
	var begin struct {
		Ceremony  string `json:"ceremony"`
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := p.do(http.MethodPost, "/api/requests/"+url.PathEscape(id)+"/begin", body, &begin); err != nil {
		return "", "", err
	}
	return begin.Ceremony, begin.PublicKey.Challenge, nil
}

// FinishDecision sends assertion (a key's answer, see SoftKey.Get) for
// the decision ceremony of request id.
func (p *Page) FinishDecision(id, ceremony string, assertion []byte) (*Request, error) {
	var r Request
	err := p.do(http.MethodPost, "/api/requests/"+url.PathEscape(id)+"/finish",
		map[string]any{"ceremony": ceremony, "credential": json.RawMessage(assertion)}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// FreezeAgent presses an agent's Freeze button.
func (p *Page) FreezeAgent(name string) error {
	return p.do(http.MethodPost, "/api/agents/"+url.PathEscape(name)+"/freeze", struct{}{}, nil)
}

// BeginBatch starts one tap over the requests ids, as the batch
// confirmation page does, and returns the ceremony and the challenge.
func (p *Page) BeginBatch(ids []string) (ceremony, challenge string, err error) {
	var begin struct {
		Ceremony  string `json:"ceremony"`
		PublicKey struct {
			Challenge string `json:"challenge"`
		} `json:"publicKey"`
	}
	if err := p.do(http.MethodPost, "/api/batch/begin", map[string]any{"requests": ids}, &begin); err != nil {
		return "", "", err
	}
	return begin.Ceremony, begin.PublicKey.Challenge, nil
}

// FinishBatch sends assertion (a key's answer, see SoftKey.Get) for the
// batch ceremony of ids and returns the requests as the page then shows
// them.
func (p *Page) FinishBatch(ids []string, ceremony string, assertion []byte) ([]Request, error) {
	var out struct {
		Requests []Request `json:"requests"`
	}
	err := p.do(http.MethodPost, "/api/batch/finish",
		map[string]any{"requests": ids, "ceremony": ceremony, "credential": json.RawMessage(assertion)}, &out)
	return out.Requests, err
}

// ApproveBatch approves every request in ids with one tap of key.
func (p *Page) ApproveBatch(ids []string, key *SoftKey) ([]Request, error) {
	ceremony, challenge, err := p.BeginBatch(ids)
	if err != nil {
		return nil, err
	}
	return p.FinishBatch(ids, ceremony, key.Get(challenge))
}
