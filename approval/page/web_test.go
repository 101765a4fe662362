package page

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/vocab"
)

// httpFixture serves Handler on a real listener and talks to it as the
// page's JavaScript would (cookie + CSRF header + Origin).
type httpFixture struct {
	*fixture
	base   string
	addr   string
	client *http.Client
	csrf   string
}

// newServedFixture serves the service's Handler on a real listener,
// reachable as base = http://localhost:PORT (RP ID localhost); addr is the
// listener's 127.0.0.1 address. edit, if not nil, changes the service's
// and the page's options before either starts.
func newServedFixture(t testing.TB, edit func(*approval.Options, *Options)) (f *fixture, base, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	base = fmt.Sprintf("http://localhost:%d", port)
	po := Options{Origins: []string{base}, PublicURL: base, AllowedHosts: []string{fmt.Sprintf("localhost:%d", port)}}
	f = newFixture(t, func(o *approval.Options) {
		o.Origins = []string{base}
		o.PublicURL = base
		if edit != nil {
			edit(o, &po)
		}
	})
	srv := &http.Server{Handler: Handler(f.svc, po), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f, base, ln.Addr().String()
}

func newHTTPFixture(t *testing.T) *httpFixture {
	t.Helper()
	f, base, addr := newServedFixture(t, func(_ *approval.Options, o *Options) { o.MaxBodyBytes = 8 << 10 })
	jar, _ := cookiejar.New(nil)
	h := &httpFixture{fixture: f, base: base, addr: addr, client: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		// "localhost" resolves to the listener, whatever the resolver says.
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}},
	}}
	// A page visit sets the CSRF cookie and meta tag.
	resp, err := h.client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf-token" content="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf meta tag in %s", body)
	}
	h.csrf = string(m[1])
	return h
}

func (h *httpFixture) post(t *testing.T, path string, body []byte, mod func(*http.Request)) (int, apiError, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.base+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", h.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("X-CSRF-Token", h.csrf)
	if mod != nil {
		mod(req)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e apiError
	json.Unmarshal(raw, &e)
	return resp.StatusCode, e, raw
}

func TestHTTPApproveThroughAPI(t *testing.T) {
	h := newHTTPFixture(t)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(t, "localhost", h.base)
	h.enroll(t, "alice", alice)
	req, _ := h.svc.Create(ctx, paymentRequest("alice"))

	code, e, raw := h.post(t, "/api/requests/"+req.ID+"/begin", []byte(`{"decision":"approve"}`), nil)
	if code != 200 {
		t.Fatalf("begin: %d %+v", code, e)
	}
	var opts approval.DecisionOptions
	json.Unmarshal(raw, &opts)
	body, _ := json.Marshal(finishBody{Ceremony: opts.Ceremony, Credential: alice.Get(opts.PublicKey.Challenge.String())})
	code, e, raw = h.post(t, "/api/requests/"+req.ID+"/finish", body, nil)
	if code != 200 {
		t.Fatalf("finish: %d %+v", code, e)
	}
	var got requestJSON
	json.Unmarshal(raw, &got)
	if got.State != vocab.StateApproved {
		t.Fatalf("state %q", got.State)
	}
	// The same body again: refused, named, recorded.
	code, e, _ = h.post(t, "/api/requests/"+req.ID+"/finish", body, nil)
	if code != http.StatusForbidden || e.Check != "ceremony" {
		t.Fatalf("replayed finish: %d %+v", code, e)
	}
	h.rec.RequireRejected(t, ceremony.ErrCeremony.Check)
}

func TestHTTPProtectiveLayers(t *testing.T) {
	h := newHTTPFixture(t)
	ctx := context.Background()
	h.enroll(t, "alice", approvaltest.NewSoftKey(t, "localhost", h.base))
	req, _ := h.svc.Create(ctx, paymentRequest("alice"))
	begin := "/api/requests/" + req.ID + "/begin"

	t.Run("headers", func(t *testing.T) {
		resp, err := h.client.Get(h.base + "/requests/" + req.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("CSP %q", csp)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
			if resp.Header.Get(k) != v {
				t.Errorf("%s = %q", k, resp.Header.Get(k))
			}
		}
		if regexp.MustCompile(`<script>|<style|style="|onclick=`).Match(body) {
			t.Errorf("inline script or style in page")
		}
		if !strings.Contains(string(body), "USD 500,000.00") || !strings.Contains(string(body), req.Code) {
			t.Errorf("request page lacks amount or code")
		}
	})

	t.Run("host of another name", func(t *testing.T) {
		r, _ := http.NewRequest(http.MethodGet, h.base+"/", nil)
		r.Host = "evil.example:" + strings.Split(h.addr, ":")[1]
		resp, err := h.client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})

	for _, tc := range []struct {
		name   string
		body   []byte
		mod    func(*http.Request)
		status int
		check  string
	}{
		{"no csrf token", []byte(`{"decision":"approve"}`), func(r *http.Request) { r.Header.Del("X-CSRF-Token") }, 403, "csrf"},
		{"wrong csrf token", []byte(`{"decision":"approve"}`), func(r *http.Request) { r.Header.Set("X-CSRF-Token", strings.Repeat("A", 43)) }, 403, "csrf"},
		{"foreign origin", []byte(`{"decision":"approve"}`), func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, 403, "origin"},
		{"no origin", []byte(`{"decision":"approve"}`), func(r *http.Request) { r.Header.Del("Origin") }, 403, "origin"},
		{"cross-site fetch", []byte(`{"decision":"approve"}`), func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, 403, "origin"},
		{"not json", []byte(`decision=approve`), func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, 415, "content_type"},
		{"malformed json", []byte(`{"decision":`), nil, 400, "malformed"},
		{"unknown field", []byte(`{"decision":"approve","admin":true}`), nil, 400, "malformed"},
		{"trailing data", []byte(`{"decision":"approve"} {}`), nil, 400, "malformed"},
		{"bad decision", []byte(`{"decision":"maybe"}`), nil, 400, "invalid"},
		{"oversized", append([]byte(`{"decision":"`), bytes.Repeat([]byte("a"), 9<<10)...), nil, 413, "too_large"},
		{"oversized chunked", append([]byte(`{"decision":"`), bytes.Repeat([]byte("a"), 9<<10)...), func(r *http.Request) { r.ContentLength = -1 }, 413, "too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, e, raw := h.post(t, begin, tc.body, tc.mod)
			if code != tc.status || e.Check != tc.check || e.Error == "" {
				t.Fatalf("got %d %s, want %d check %q", code, raw, tc.status, tc.check)
			}
		})
	}

	t.Run("malformed assertion is recorded", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"ceremony": "nope", "credential": map[string]any{"id": "x"}})
		code, e, _ := h.post(t, "/api/requests/"+req.ID+"/finish", body, nil)
		if code != 403 || e.Check != "ceremony" {
			t.Fatalf("%d %+v", code, e)
		}
		h.rec.RequireRejected(t, ceremony.ErrCeremony.Check)
		opts, err := h.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = json.Marshal(map[string]any{"ceremony": opts.Ceremony, "credential": map[string]any{"id": "x", "type": "public-key"}})
		code, e, _ = h.post(t, "/api/requests/"+req.ID+"/finish", body, nil)
		if code != 400 || e.Check != "malformed" {
			t.Fatalf("%d %+v", code, e)
		}
		h.rec.RequireRejected(t, ceremony.ErrMalformed.Check)
	})

	t.Run("unknown request", func(t *testing.T) {
		code, e, _ := h.post(t, "/api/requests/nope/begin", []byte(`{"decision":"approve"}`), nil)
		if code != 404 {
			t.Fatalf("%d %+v", code, e)
		}
	})

	if r, _ := h.svc.Get(ctx, req.ID); r.State != vocab.StatePending {
		t.Fatalf("state after attacks: %s", r.State)
	}
}

func TestHTTPEventsAndEnrollPage(t *testing.T) {
	h := newHTTPFixture(t)
	ctx := context.Background()
	resp, err := h.client.Get(h.base + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	buf := make([]byte, 256)
	resp.Body.Read(buf) // the retry preamble
	if _, err := h.svc.Create(ctx, paymentRequest("alice")); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for !strings.Contains(got.String(), "event: change") {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("event stream: %v after %q", err, got.String())
		}
		got.Write(buf[:n])
	}

	link, _ := h.svc.CreateEnrollment(ctx, "bob")
	if e, _ := h.rec.Last(vocab.KindEnrollmentCreated); e.Approver != "bob" {
		t.Fatalf("enrollment entry %+v", e)
	}
	u, _ := url.Parse(link)
	for path, want := range map[string]int{u.Path: 200, "/enroll/forged": 404} {
		r, err := h.client.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, r.StatusCode, want)
		}
	}
	if _, err := h.svc.CreateEnrollment(ctx, "mallory"); err == nil {
		t.Fatal("enrollment for an approver not in config")
	}
}
