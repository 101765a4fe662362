package page

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// marker is what the attacker writes wherever the page takes text; it must
// never appear in the exported log.
const marker = "ATTACKER TEXT: approved by CFO"

// hostileFixture is the page served on 127.0.0.1 over a real audit log, and
// an attacker who talks raw HTTP with a CSRF cookie and header of their own.
type hostileFixture struct {
	*fixture
	log    *audit.Log
	base   string
	client *http.Client
	clock  *approvaltest.Clock
}

func newHostileFixture(t *testing.T) *hostileFixture {
	t.Helper()
	ctx := context.Background()
	dir, db, log, _ := approvaltest.OpenLog(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	base := fmt.Sprintf("http://localhost:%d", port)
	clock := approvaltest.NewClock(time.Now())
	svc, err := approval.New(ctx, db, log, approval.Options{RPID: "localhost", Origins: []string{base}, Approvers: testApprovers,
		Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv := &http.Server{Handler: Handler(svc, Options{Origins: []string{base}, AllowedHosts: []string{fmt.Sprintf("localhost:%d", port)}}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	return &hostileFixture{
		fixture: &fixture{svc: svc, db: db, dir: dir},
		log:     log, base: base, clock: clock,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}},
	}
}

// attack POSTs body to path as a local process would: Origin and
// Sec-Fetch-Site as a browser on the page sends them, and a CSRF cookie and
// header pair it made up (the double-submit check only compares the two).
func (h *hostileFixture) attack(t *testing.T, path string, body any, mod func(*http.Request)) (int, apiError, http.Header) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, h.base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", h.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	self := strings.Repeat("m", 43)
	req.AddCookie(&http.Cookie{Name: csrfCookie, Value: self})
	req.Header.Set("X-CSRF-Token", self)
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
	return resp.StatusCode, e, resp.Header
}

// export is the whole log as an auditor gets it.
func (h *hostileFixture) export(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := h.log.Export(context.Background(), &b, 0); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// rejected is the last approval.rejected entry of the export.
func (h *hostileFixture) rejected(t *testing.T) map[string]any {
	t.Helper()
	var last map[string]any
	for _, line := range strings.Split(h.export(t), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["kind"] == string(vocab.KindApprovalRejected) {
			last = m
		}
	}
	if last == nil {
		t.Fatal("no approval.rejected entry")
	}
	return last
}

func (h *hostileFixture) requireNoMarker(t *testing.T) {
	t.Helper()
	if x := h.export(t); strings.Contains(x, marker) || strings.Contains(strings.ToLower(x), "attacker") {
		t.Fatalf("visitor text reached the signed log:\n%s", x)
	}
}

func TestVisitorTextNeverReachesTheLog(t *testing.T) {
	h := newHostileFixture(t)
	ctx := context.Background()
	alice := approvaltest.NewSoftKey(t, "localhost", h.base)
	h.enroll(t, "alice", alice)
	req, err := h.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	finish := "/api/requests/" + req.ID + "/finish"

	t.Run("ceremony text", func(t *testing.T) {
		code, e, _ := h.attack(t, finish, map[string]any{"ceremony": marker, "credential": map[string]any{"id": marker}}, nil)
		if code != http.StatusForbidden || e.Check != "ceremony" {
			t.Fatalf("%d %+v", code, e)
		}
		r := h.rejected(t)
		if r["reason"] != "ceremony: "+"no unused, unexpired ceremony of this request matched" || r["request_id"] != req.ID {
			t.Fatalf("rejected entry %v", r)
		}
		h.requireNoMarker(t)
	})

	t.Run("forged signature under alice's credential id", func(t *testing.T) {
		code, e, _ := h.attack(t, "/api/requests/"+req.ID+"/begin", map[string]any{"decision": "approve"}, nil)
		if code != http.StatusOK {
			t.Fatalf("begin: %d %+v", code, e)
		}
		opts, err := h.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		if err != nil {
			t.Fatal(err)
		}
		// mallory's key, alice's credential id, the right challenge; the
		// origin member carries the attacker's text.
		mallory := approvaltest.NewSoftKey(t, "localhost", h.base)
		cd, _ := json.Marshal(map[string]any{"type": "webauthn.get", "challenge": opts.PublicKey.Challenge.String(),
			"origin": h.base, "crossOrigin": false, "note": marker})
		mallory.Claim(alice.ID(), 100)
		forged := mallory.GetWith(cd)
		code, e, _ = h.attack(t, finish, map[string]any{"ceremony": opts.Ceremony, "credential": json.RawMessage(forged)}, nil)
		if code != http.StatusForbidden || e.Check != "signature" {
			t.Fatalf("%d %+v", code, e)
		}
		r := h.rejected(t)
		want := "signature: " + "the signature did not verify" + "; claimed credential " + enc(alice.ID()) + " (enrolled to alice), not verified"
		if r["reason"] != want {
			t.Fatalf("reason %q, want %q", r["reason"], want)
		}
		for _, k := range []string{"approver", "credential_id", "origin", "client_data_json", "authenticator_data", "signature"} {
			if _, ok := r[k]; ok {
				t.Errorf("rejected entry of an unverified assertion has %q: %v", k, r)
			}
		}
		h.requireNoMarker(t)
		if got, _ := h.svc.Get(ctx, req.ID); got.State != vocab.StatePending {
			t.Fatalf("state %s", got.State)
		}
	})

	t.Run("ids are checked for format before lookup", func(t *testing.T) {
		before := h.export(t)
		for _, path := range []string{
			"/api/requests/" + strings.ReplaceAll(marker, " ", "%20") + "/begin",
			"/api/requests/" + strings.ToUpper(req.ID) + "/finish",
			"/api/enroll/" + strings.ReplaceAll(marker, " ", "%20") + "/finish",
		} {
			code, e, hdr := h.attack(t, path, map[string]any{"ceremony": marker}, nil)
			if code != http.StatusNotFound || e.Check != "bad_id" || hdr.Get(RefusedHeader) != "bad_id" {
				t.Fatalf("%s: %d %+v", path, code, e)
			}
		}
		// An unknown request of the right shape is refused and not recorded:
		// its id is the visitor's, not one the server issued.
		code, _, _ := h.attack(t, "/api/requests/00000000-0000-4000-8000-000000000000/finish", map[string]any{"ceremony": marker}, nil)
		if code != http.StatusForbidden && code != http.StatusNotFound {
			t.Fatalf("unknown request: %d", code)
		}
		if after := h.export(t); after != before {
			t.Fatalf("malformed or unknown ids were recorded:\n%s", strings.TrimPrefix(after, before))
		}
	})

	t.Run("enrollment finish on a real link", func(t *testing.T) {
		link, err := h.svc.CreateEnrollment(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		token := link[strings.LastIndex(link, "/")+1:]
		code, e, _ := h.attack(t, "/api/enroll/"+token+"/finish", map[string]any{"ceremony": marker, "credential": map[string]any{"id": marker}}, nil)
		if code != http.StatusForbidden || e.Check != "ceremony" {
			t.Fatalf("%d %+v", code, e)
		}
		r := h.rejected(t)
		if r["reason"] != "enrollment: ceremony: "+"no unused, unexpired ceremony of this request matched"+"; link of bob" {
			t.Fatalf("rejected entry %v", r)
		}
		if _, ok := r["approver"]; ok {
			t.Fatalf("unverified enrollment attributed: %v", r)
		}
		h.requireNoMarker(t)
	})

	t.Run("HTTP-layer refusals are labelled and not recorded", func(t *testing.T) {
		before := h.export(t)
		begin := "/api/requests/" + req.ID + "/begin"
		for _, tc := range []struct {
			check string
			mod   func(*http.Request)
		}{
			{"host_not_allowed", func(r *http.Request) { r.Host = "evil.example" }},
			{"origin", func(r *http.Request) { r.Header.Set("Origin", "http://"+strings.ReplaceAll(marker, " ", "")) }},
			{"csrf", func(r *http.Request) { r.Header.Set("X-CSRF-Token", marker) }},
		} {
			code, e, hdr := h.attack(t, begin, map[string]any{"decision": "approve"}, tc.mod)
			if code != http.StatusForbidden || e.Check != tc.check || hdr.Get(RefusedHeader) != tc.check {
				t.Fatalf("%s: %d %+v %v", tc.check, code, e, hdr)
			}
		}
		if after := h.export(t); after != before {
			t.Fatalf("HTTP-layer refusals were recorded:\n%s", strings.TrimPrefix(after, before))
		}
	})
}

// A script that begins ceremonies in a loop is slowed to a trickle, and the
// ceremonies nobody finishes are deleted once they expire.
func TestBeginFloodIsLimitedAndSwept(t *testing.T) {
	h := newHostileFixture(t)
	ctx := context.Background()
	h.enroll(t, "alice", approvaltest.NewSoftKey(t, "localhost", h.base))
	req, err := h.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	begin := "/api/requests/" + req.ID + "/begin"
	var ok, limited int
	for range 50 {
		code, e, _ := h.attack(t, begin, map[string]any{"decision": "approve"}, nil)
		switch {
		case code == http.StatusOK:
			ok++
		case code == http.StatusTooManyRequests && e.Check == "rate_limited":
			limited++
		default:
			t.Fatalf("%d %+v", code, e)
		}
	}
	if ok > perRequestBurst+2 || limited == 0 {
		t.Fatalf("50 begins in a burst: %d started, %d limited; want at most about %d started", ok, limited, perRequestBurst)
	}
	// Another request is limited by the address, not only per request.
	for range 3 * perAddressBurst {
		other, _ := h.svc.Create(ctx, paymentRequest("alice"))
		h.attack(t, "/api/requests/"+other.ID+"/begin", map[string]any{"decision": "approve"}, nil)
	}
	var rows int
	h.db.QueryRow(`SELECT COUNT(*) FROM approval_ceremonies`).Scan(&rows)
	if rows > perRequestBurst+perAddressBurst+4 {
		t.Fatalf("%d ceremony rows after a flood", rows)
	}
}
