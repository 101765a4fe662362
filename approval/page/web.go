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
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/vocab"
)

// server is the page of one approval service.
type server struct {
	svc  *approval.Service
	opts Options // defaults filled in
}

// Handler is the approver page of svc and its JSON and event-stream
// endpoints, wrapped in every protective layer: security headers and CSP,
// Host check, cross-origin and CSRF checks on every POST, body size limit,
// JSON only. Origins, allowed hosts, the body limit and sign-in are opts';
// with no origins every request is refused.
func Handler(svc *approval.Service, opts Options) http.Handler {
	s := &server{svc: svc, opts: opts.withDefaults()}
	if len(s.opts.Origins) == 0 {
		s.opts.Logger.Error("approval page: no origins configured; every request is refused")
	}
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.pageIndex)
	mux.HandleFunc("GET /requests/{id}", s.pageRequest)
	mux.HandleFunc("GET /enroll/{token}", s.pageEnroll)
	mux.HandleFunc("GET /api/requests", s.apiList)
	mux.Handle("GET /api/requests/{id}", s.requirePathID("id", ceremony.ValidID, http.HandlerFunc(s.apiGet)))
	mux.HandleFunc("GET /api/events", s.apiEvents)
	// Ceremony endpoints: the id must look like one we issued, then the
	// rate limits apply (visitor.go).
	lim := newPageLimits(s.refuse, s.svc.Now)
	limited := func(name string, valid func(string) bool, h http.HandlerFunc) http.Handler {
		return s.requirePathID(name, valid, lim.limit(name, h))
	}
	mux.Handle("POST /api/requests/{id}/begin", limited("id", ceremony.ValidID, s.apiBegin))
	mux.Handle("POST /api/requests/{id}/finish", limited("id", ceremony.ValidID, s.apiFinish))
	mux.HandleFunc("GET /api/grants", s.apiGrants)
	mux.Handle("POST /api/grants/{id}/revoke", limited("id", ceremony.ValidID, s.apiRevokeGrant))
	mux.HandleFunc("GET /api/agents", s.apiAgents)
	mux.Handle("POST /api/agents/{name}/freeze", limited("name", freezable, s.apiFreezeAgent))
	mux.Handle("POST /api/enroll/{token}/begin", limited("token", ceremony.ValidToken, s.apiEnrollBegin))
	mux.Handle("POST /api/enroll/{token}/finish", limited("token", ceremony.ValidToken, s.apiEnrollFinish))
	mux.HandleFunc("GET /batch", s.pageBatch)
	// A batch names its requests in the body: only the address is limited.
	mux.Handle("POST /api/batch/begin", lim.limit("", http.HandlerFunc(s.apiBatchBegin)))
	mux.Handle("POST /api/batch/finish", lim.limit("", http.HandlerFunc(s.apiBatchFinish)))

	var h http.Handler = mux
	if s.opts.RequireSignIn || s.opts.Identity != nil {
		ss := &sessions{kept: s.opts.Sessions, now: s.svc.Now, m: map[[32]byte]signedIn{}}
		mux.HandleFunc("GET /signin", s.pageSignIn)
		mux.Handle("POST /api/signin/begin", lim.limit("", http.HandlerFunc(s.apiSignInBegin)))
		mux.Handle("POST /api/signin/finish", lim.limit("", s.apiSignInFinish(ss)))
		if s.opts.Identity != nil {
			mux.Handle("GET "+oidcPath, lim.limit("", http.HandlerFunc(s.oidcStart)))
			mux.Handle("GET "+CallbackPath, lim.limit("", s.oidcCallback(ss)))
			mux.Handle("POST /api/self-enroll", lim.limit("", http.HandlerFunc(s.apiSelfEnroll)))
		}
		h = s.requireSession(ss, h)
	}
	h = s.limitJSONBody(h)
	h = s.checkCSRF(h)
	h = s.checkOrigin(h)
	h = s.checkHost(h)
	h = securityHeaders(h)
	return h
}

// freezable reports whether the page may freeze name: an agent's own
// name, not every agent at once (that is the CLI's).
func freezable(name string) bool { return freeze.ValidAgent(name) && name != freeze.AllAgents }

// lists are what the page and /api/requests both show: the pending
// requests that expire soonest, how many are pending in all, and the
// latest decided.
func (s *server) lists(ctx context.Context) (pending []*approval.Request, total int, history []*approval.Request, err error) {
	if pending, err = s.svc.Pending(ctx, pendingShown); err != nil {
		return nil, 0, nil, err
	}
	if total, err = s.svc.PendingCount(ctx); err != nil {
		return nil, 0, nil, err
	}
	if history, err = s.svc.History(ctx, 50); err != nil {
		return nil, 0, nil, err
	}
	return pending, total, history, nil
}

func (s *server) pageIndex(w http.ResponseWriter, r *http.Request) {
	pending, total, history, err := s.lists(r.Context())
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
		Agents: agents, Now: s.svc.Now(), MaxBatch: s.svc.MaxBatch(), Person: personOf(r)})
}

func (s *server) pageRequest(w http.ResponseWriter, r *http.Request) {
	req, err := s.svc.Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, approval.ErrNotFound) {
		s.renderStatus(w, r, http.StatusNotFound, "request.html", pageData{Title: "Not found", NotFound: true})
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
	holders, err := s.holders(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, r, "request.html", pageData{Title: req.Tool + " " + req.Code, Request: req, Offer: offer, QR: s.pageQR(s.svc.RequestURL(req.ID)), Holders: holders})
}

// holders are the approvers who can approve now: those with an enrolled,
// unrevoked key.
func (s *server) holders(ctx context.Context) (map[string]bool, error) {
	keys, err := s.svc.Credentials(ctx)
	if err != nil {
		return nil, err
	}
	return ceremony.Holders(keys), nil
}

func (s *server) pageEnroll(w http.ResponseWriter, r *http.Request) {
	approver, err := s.svc.EnrollmentApprover(r.Context(), r.PathValue("token"))
	if err != nil {
		s.renderStatus(w, r, http.StatusNotFound, "enroll.html", pageData{Title: "Enrollment link not valid", NotFound: true})
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
	Level          vocab.Level     `json:"level"`
	State          vocab.State     `json:"state"`
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
		Batchable: r.Batchable && r.Level == vocab.LevelHigh,
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
	pending, total, history, err := s.lists(r.Context())
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
		Decision vocab.Decision `json:"decision"`
		Grant    *grantBody     `json:"grant"` // approve and grant (approval/grant.go)
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	var opts *approval.DecisionOptions
	var err error
	if body.Grant != nil {
		if body.Decision != vocab.Approve {
			writeError(w, http.StatusBadRequest, "invalid", "only an approval can create a grant")
			return
		}
		opts, err = s.svc.BeginGrant(r.Context(), r.PathValue("id"), body.Grant.choice())
	} else {
		opts, err = s.svc.BeginDecision(r.Context(), r.PathValue("id"), body.Decision)
	}
	if err != nil {
		s.failDecision(w, err)
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
		s.failDecision(w, err)
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
