// Package page is the approver page: the HTTP handlers, templates and
// static files through which a person reads a pending request and answers
// it with a security-key tap, and the layers that guard them (CSP and
// security headers, Host, Origin and CSRF checks, body limits, rate
// limits, sign-in). It holds no state of its own beyond sign-in sessions
// and rate-limit buckets: every read and every decision is a method of
// approval.Service, which checks it.
package page

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/countersign/countersign/approval"
)

//go:embed web
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"lines":    displayLines,
	"server":   func(d string) []displayLine { return pickLines(d, false) },
	"quoted":   func(d string) []displayLine { return pickLines(d, true) },
	"json":     visibleJSON,
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":     strings.Join,
	"contains": slices.Contains[[]string],
	"minutes":  func(d time.Duration) int { return int(d / time.Minute) },
	"single":   singleDisplay,
	"inBatch":  batchDisplay,
}).ParseFS(webFS, "web/*.html"))

// displayLine is one "Label: value" line of the display text; the page
// shows both halves verbatim.
type displayLine struct {
	Label, Value string
	Warning      bool
	Quote        bool // text the agent wrote (AgentPrefix), shown as its quotation
	// Head, set when Value is longer than pageFoldChars, is its start: the
	// page shows it folded, Head first and the whole Value a tap away. Only
	// the page folds; the display text that is signed and stored is whole.
	Head  string
	Chars int // characters of Value, when folded
}

// Values longer than pageFoldChars are folded on the page to their first
// pageFoldHead characters, so that a long one does not push the rest of
// the request (and the buttons) screens away.
const (
	pageFoldChars = 200
	pageFoldHead  = 120
)

// pickLines returns the server's lines, or the agent's quoted ones.
func pickLines(display string, quoted bool) []displayLine {
	var out []displayLine
	for _, l := range displayLines(display) {
		if l.Quote == quoted {
			out = append(out, l)
		}
	}
	return out
}

func displayLines(display string) []displayLine {
	var out []displayLine
	for _, l := range strings.Split(display, "\n") {
		label, value, ok := strings.Cut(l, ": ")
		if !ok {
			label, value = "", l
		}
		dl := displayLine{Label: label, Value: value, Warning: strings.HasPrefix(l, approval.WarningPrefix), Quote: approval.IsAgentLine(l)}
		if n := utf8.RuneCountInString(value); n > pageFoldChars {
			dl.Head, dl.Chars = string([]rune(value)[:pageFoldHead]), n
		}
		out = append(out, dl)
	}
	return out
}

// visibleJSON is raw JSON for the page with every character that would
// not be seen as itself (mustEscape: bidi controls, zero-width and other
// invisible characters) written as a JSON \u escape. It is the same JSON
// value, but an override in a string shows as text instead of reordering
// what is read. JSON whitespace between tokens is kept.
func visibleJSON(raw []byte) string {
	var b strings.Builder
	for _, r := range string(raw) {
		switch {
		case r == '\n' || r == '\r' || r == '\t' || !approval.Invisible(r):
			b.WriteRune(r)
		case r > 0xFFFF:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04X\u%04X`, hi, lo)
		default:
			fmt.Fprintf(&b, `\u%04X`, r)
		}
	}
	return b.String()
}

const csrfCookie = "countersign_csrf"

// server is the page of one approval service.
type server struct {
	svc  *approval.Service
	opts approval.Options // the service's, defaults filled in
}

// Handler is the approver page of svc and its JSON and event-stream
// endpoints, wrapped in every protective layer: security headers and CSP,
// Host check, cross-origin and CSRF checks on every POST, body size limit,
// JSON only. Origins, allowed hosts, the body limit and sign-in are svc's
// options.
func Handler(svc *approval.Service) http.Handler {
	s := &server{svc: svc, opts: svc.Options()}
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.pageIndex)
	mux.HandleFunc("GET /requests/{id}", s.pageRequest)
	mux.HandleFunc("GET /enroll/{token}", s.pageEnroll)
	mux.HandleFunc("GET /api/requests", s.apiList)
	mux.Handle("GET /api/requests/{id}", s.requirePathID("id", approval.ValidID, http.HandlerFunc(s.apiGet)))
	mux.HandleFunc("GET /api/events", s.apiEvents)
	// Ceremony endpoints: the id must look like one we issued, then the
	// rate limits apply (visitor.go).
	lim := newPageLimits(s.refuse, s.svc.Now)
	ceremony := func(name string, valid func(string) bool, h http.HandlerFunc) http.Handler {
		return s.requirePathID(name, valid, lim.limit(name, h))
	}
	mux.Handle("POST /api/requests/{id}/begin", ceremony("id", approval.ValidID, s.apiBegin))
	mux.Handle("POST /api/requests/{id}/finish", ceremony("id", approval.ValidID, s.apiFinish))
	mux.HandleFunc("GET /api/grants", s.apiGrants)
	mux.Handle("POST /api/grants/{id}/revoke", ceremony("id", approval.ValidID, s.apiRevokeGrant))
	mux.HandleFunc("GET /api/agents", s.apiAgents)
	mux.Handle("POST /api/agents/{name}/freeze", ceremony("name", freezable, s.apiFreezeAgent))
	mux.Handle("POST /api/enroll/{token}/begin", ceremony("token", approval.ValidToken, s.apiEnrollBegin))
	mux.Handle("POST /api/enroll/{token}/finish", ceremony("token", approval.ValidToken, s.apiEnrollFinish))
	mux.HandleFunc("GET /batch", s.pageBatch)
	// A batch names its requests in the body: only the address is limited.
	mux.Handle("POST /api/batch/begin", lim.limit("", http.HandlerFunc(s.apiBatchBegin)))
	mux.Handle("POST /api/batch/finish", lim.limit("", http.HandlerFunc(s.apiBatchFinish)))

	var h http.Handler = mux
	if s.opts.RequireSignIn {
		ss := &sessions{m: map[[32]byte]signedIn{}}
		mux.HandleFunc("GET /signin", s.pageSignIn)
		mux.Handle("POST /api/signin/begin", lim.limit("", http.HandlerFunc(s.apiSignInBegin)))
		mux.Handle("POST /api/signin/finish", lim.limit("", s.apiSignInFinish(ss)))
		h = s.requireSession(ss, h)
	}
	h = s.limitJSONBody(h)
	h = s.checkCSRF(h)
	h = s.checkOrigin(h)
	h = s.checkHost(h)
	h = securityHeaders(h)
	return h
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "+
			"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// checkHost refuses any Host header not in AllowedHosts: a page reached
// through another name (DNS rebinding) gets 403.
func (s *server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.ContainsFunc(s.opts.AllowedHosts, func(h string) bool { return strings.EqualFold(h, r.Host) }) {
			s.opts.Logger.Warn("approval page: refused host", "host", bounded(r.Host), "remote", r.RemoteAddr)
			s.refuse(w, r, http.StatusForbidden, "host_not_allowed", fmt.Sprintf("host %q is not allowed", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkOrigin requires every state-changing request to come from one of
// our origins: Origin must be configured, and Sec-Fetch-Site, when sent,
// same-origin.
func (s *server) checkOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isSafe(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		origin := r.Header.Get("Origin")
		if !slices.Contains(s.opts.Origins, origin) {
			s.opts.Logger.Warn("approval page: refused origin", "origin", bounded(origin), "remote", r.RemoteAddr)
			s.refuse(w, r, http.StatusForbidden, "origin", fmt.Sprintf("origin %q is not allowed", origin))
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
			s.refuse(w, r, http.StatusForbidden, "origin", "cross-site request refused (Sec-Fetch-Site: "+site+")")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkCSRF is a double-submit token: pages set a random cookie and put
// the same value in a meta tag; POSTs echo it in X-CSRF-Token.
func (s *server) checkCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isSafe(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		c, err := r.Cookie(csrfCookie)
		tok := r.Header.Get("X-CSRF-Token")
		if err != nil || len(c.Value) < 32 || subtle.ConstantTimeCompare([]byte(c.Value), []byte(tok)) != 1 {
			s.refuse(w, r, http.StatusForbidden, "csrf", "missing or wrong CSRF token; reload the page")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitJSONBody refuses non-JSON POSTs (415) and bodies over MaxBodyBytes
// (413).
func (s *server) limitJSONBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isSafe(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			s.refuse(w, r, http.StatusUnsupportedMediaType, "content_type", "send application/json")
			return
		}
		if r.ContentLength > s.opts.MaxBodyBytes {
			s.refuse(w, r, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", s.opts.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// freezable reports whether the page may freeze name: an agent's own
// name, not every agent at once (that is the CLI's).
func freezable(name string) bool { return approval.ValidAgent(name) && name != approval.AllAgents }

func isSafe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

type apiError struct {
	Error string `json:"error"`
	Check string `json:"check,omitempty"`
}

func writeError(w http.ResponseWriter, status int, check, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: msg, Check: check})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// fail maps a service error to a status and a JSON body.
func (s *server) fail(w http.ResponseWriter, err error) {
	var ce *approval.CheckError
	switch {
	case errors.As(err, &ce):
		status := http.StatusForbidden
		if errors.Is(err, approval.ErrNotPending) || errors.Is(err, approval.ErrExpired) {
			status = http.StatusConflict
		}
		if errors.Is(err, approval.ErrMalformed) {
			status = http.StatusBadRequest
		}
		writeError(w, status, ce.Check, "refused: "+err.Error())
	case errors.Is(err, approval.ErrNotFound), errors.Is(err, approval.ErrEnrollment):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, approval.ErrInvalidRequest):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, context.Canceled):
		// The browser went away; nobody to answer.
	default:
		s.opts.Logger.Error("approval page", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the server log")
	}
}

// decodeJSON reads a size-limited JSON body into v, strictly.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", mbe.Limit))
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed", "cannot read body")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed", "bad JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed", "bad JSON: trailing data")
		return false
	}
	return true
}

// csrfToken returns the page's token, setting the cookie on first visit.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return tok
}

// pendingShown bounds the pending list; the page says when more wait.
const pendingShown = 100

type pageData struct {
	Title        string
	CSRF         string
	Pending      []*approval.Request
	PendingTotal int // all pending requests, of which Pending lists the first
	History      []*approval.Request
	Keys         []approval.Credential
	Request      *approval.Request
	Approver     string
	NotFound     bool
	Offer        *approval.GrantOffer // the grant offered with Request (approval/grant.go)
	Grants       []*approval.Grant    // standing grants, newest first
	Agents       []approval.AgentView // agents the page can freeze, and frozen ones (approval/freeze.go)
	Now          time.Time
	QR           *qrCode    // this page's public URL, for a phone to scan
	MaxBatch     int        // the pending list: how many one tap may approve
	Batch        *batchView // the batch confirmation page
}

func (s *server) render(w http.ResponseWriter, r *http.Request, name string, d pageData) {
	d.CSRF = csrfToken(w, r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.ExecuteTemplate(w, name, d); err != nil {
		s.opts.Logger.Error("approval page: render", "page", name, "err", err)
	}
}

func (s *server) pageIndex(w http.ResponseWriter, r *http.Request) {
	pending, err := s.svc.Pending(r.Context(), pendingShown)
	if err != nil {
		s.fail(w, err)
		return
	}
	total, err := s.svc.PendingCount(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	history, err := s.svc.History(r.Context(), 50)
	if err != nil {
		s.fail(w, err)
		return
	}
	keys, err := s.svc.Credentials(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	grants, err := s.svc.Grants(r.Context(), grantsShown)
	if err != nil {
		s.fail(w, err)
		return
	}
	agents, err := s.svc.Agents(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, r, "index.html", pageData{Title: "Approvals", Pending: pending, PendingTotal: total, History: history, Keys: keys, Grants: grants,
		Agents: agents, Now: s.svc.Now(), MaxBatch: s.svc.MaxBatch()})
}

func (s *server) pageRequest(w http.ResponseWriter, r *http.Request) {
	req, err := s.svc.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, approval.ErrNotFound) {
		w.WriteHeader(http.StatusNotFound)
		s.render(w, r, "request.html", pageData{Title: "Not found", NotFound: true})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	offer, err := s.svc.Offer(r.Context(), req.ID)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, r, "request.html", pageData{Title: req.Tool + " " + req.Code, Request: req, Offer: offer, QR: s.pageQR(s.svc.RequestURL(req.ID))})
}

func (s *server) pageEnroll(w http.ResponseWriter, r *http.Request) {
	approver, err := s.svc.EnrollmentApprover(r.Context(), r.PathValue("token"))
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		s.render(w, r, "enroll.html", pageData{Title: "Enrollment link not valid", NotFound: true})
		return
	}
	s.render(w, r, "enroll.html", pageData{Title: "Register a security key", Approver: approver,
		QR: s.pageQR(s.svc.EnrollURL(r.PathValue("token")))})
}

// pageQR is the QR code of link, or nil (the page then shows none) when it
// cannot be drawn: the code is a convenience, the page works without it.
func (s *server) pageQR(link string) *qrCode {
	q, err := pageQR(link)
	if err != nil {
		s.opts.Logger.Warn("approval page: no QR code", "err", err)
		return nil
	}
	return q
}

// requestJSON is the page's view of a request.
type requestJSON struct {
	ID             string          `json:"id"`
	Tool           string          `json:"tool"`
	Agent          string          `json:"agent"`
	Level          string          `json:"level"`
	State          string          `json:"state"`
	Code           string          `json:"code"`
	BindingMessage string          `json:"bindingMessage"`
	Display        string          `json:"display"`
	Details        json.RawMessage `json:"authorizationDetails"`
	ExpiresAt      time.Time       `json:"expiresAt"`
	Approvers      []string        `json:"approvers"`
	ApproverNames  []string        `json:"approverNames"`
	Approvals      []string        `json:"approvals"`
	Quorum         int             `json:"quorum"`
	DecidedBy      string          `json:"decidedBy,omitempty"`
	DecidedAt      *time.Time      `json:"decidedAt,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	URL            string          `json:"url"`
	Batchable      bool            `json:"batchable"`
}

func toJSON(r *approval.Request) requestJSON {
	out := requestJSON{
		ID: r.ID, Tool: r.Tool, Agent: r.Agent, Level: r.Level, State: r.State, Code: r.Code,
		BindingMessage: r.BindingMessage, Display: r.Display, Details: r.AuthorizationDetails,
		ExpiresAt: r.ExpiresAt, Approvers: r.Approvers, ApproverNames: r.ApproverNames,
		Approvals: r.Approvals, Quorum: r.Quorum, DecidedBy: r.DecidedBy, Reason: r.Reason, URL: "/requests/" + r.ID,
		Batchable: r.Batchable && r.Level == "high",
	}
	if out.Approvals == nil {
		out.Approvals = []string{}
	}
	if !r.DecidedAt.IsZero() {
		out.DecidedAt = &r.DecidedAt
	}
	return out
}

func (s *server) apiList(w http.ResponseWriter, r *http.Request) {
	pending, err := s.svc.Pending(r.Context(), pendingShown)
	if err != nil {
		s.fail(w, err)
		return
	}
	total, err := s.svc.PendingCount(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	history, err := s.svc.History(r.Context(), 50)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := struct {
		Pending      []requestJSON `json:"pending"`
		PendingTotal int           `json:"pendingTotal"`
		History      []requestJSON `json:"history"`
	}{Pending: []requestJSON{}, PendingTotal: total, History: []requestJSON{}}
	for _, p := range pending {
		out.Pending = append(out.Pending, toJSON(p))
	}
	for _, h := range history {
		out.History = append(out.History, toJSON(h))
	}
	writeJSON(w, out)
}

func (s *server) apiGet(w http.ResponseWriter, r *http.Request) {
	req, err := s.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, toJSON(req))
}

// apiEvents streams "change" events; the page then re-reads what it shows.
func (s *server) apiEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	io.WriteString(w, "retry: 2000\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	heartbeat := time.NewTicker(15 * time.Second)
	defer heartbeat.Stop()
	for {
		ch := s.svc.Changes()
		select {
		case <-r.Context().Done():
			return
		case <-s.svc.Done():
			return
		case <-heartbeat.C:
			io.WriteString(w, ": keep-alive\n\n")
		case <-ch:
			io.WriteString(w, "event: change\ndata: {}\n\n")
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (s *server) apiBegin(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Decision string     `json:"decision"`
		Grant    *grantBody `json:"grant"` // approve and grant (approval/grant.go)
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	var opts *approval.DecisionOptions
	var err error
	if body.Grant != nil {
		if body.Decision != "approve" {
			writeError(w, http.StatusBadRequest, "invalid", "only an approval can create a grant")
			return
		}
		opts, err = s.svc.BeginGrant(r.Context(), r.PathValue("id"), body.Grant.choice())
	} else {
		opts, err = s.svc.BeginDecision(r.Context(), r.PathValue("id"), body.Decision)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, opts)
}

type finishBody struct {
	Ceremony   string          `json:"ceremony"`
	Credential json.RawMessage `json:"credential"`
}

func (s *server) apiFinish(w http.ResponseWriter, r *http.Request) {
	var body finishBody
	if !decodeJSON(w, r, &body) {
		return
	}
	req, err := s.svc.FinishDecision(r.Context(), r.PathValue("id"), body.Ceremony, body.Credential)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, toJSON(req))
}

func (s *server) apiEnrollBegin(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if !decodeJSON(w, r, &body) {
		return
	}
	opts, err := s.svc.BeginEnrollment(r.Context(), r.PathValue("token"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, opts)
}

func (s *server) apiEnrollFinish(w http.ResponseWriter, r *http.Request) {
	var body finishBody
	if !decodeJSON(w, r, &body) {
		return
	}
	res, err := s.svc.FinishEnrollment(r.Context(), r.PathValue("token"), body.Ceremony, body.Credential)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, res)
}
