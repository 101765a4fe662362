package idptest

import (
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// loginForm is the whole login user interface: a username, no password. Its
// element ids are stable for browser tests.
var loginForm = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>idptest sign-in</title></head><body>
<h1>Sign in to the test provider</h1>
{{if .Error}}<p id="error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="authRequestID" value="{{.ID}}">
<label>Username <input id="username" name="username" autofocus></label>
<button id="login" type="submit">Sign in</button>
</form></body></html>`))

// login is the step zitadel's op leaves to its user: it finds out who is signing
// in for an authorization request, then sends the browser back to the op's
// callback, which issues the code. An existing session signs in without the
// form unless the request forces a fresh login.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
		return
	}
	id := r.Form.Get(authRequestParam)
	s := p.store
	s.mu.Lock()
	req, ok := s.authRequests[id]
	var sess *session
	if c, err := r.Cookie(sessionCookie); err == nil {
		sess = s.sessions[c.Value]
	}
	auto := s.autoLogin
	s.mu.Unlock()
	if !ok {
		http.Error(w, "unknown or finished authorization request", http.StatusBadRequest)
		return
	}
	switch {
	case r.Method == http.MethodPost:
		p.signIn(w, r, id, r.PostForm.Get("username"))
	case auto != "":
		p.signIn(w, r, id, auto)
	case sess != nil && !req.forcesLogin(sess.authTime):
		p.resume(w, r, id, sess)
	default:
		p.showForm(w, id, "", http.StatusOK)
	}
}

func (p *Provider) showForm(w http.ResponseWriter, id, problem string, status int) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	loginForm.Execute(w, struct{ ID, Error string }{id, problem})
}

// signIn is a fresh login: a new auth_time, and a session cookie for later ones.
func (p *Provider) signIn(w http.ResponseWriter, r *http.Request, id, name string) {
	s := p.store
	s.mu.Lock()
	_, known := s.users[name]
	sess := &session{user: name, authTime: time.Now().Truncate(time.Second), acr: s.acr, amr: slices.Clone(s.amr)}
	sid := randomID()
	if known {
		s.sessions[sid] = sess
	}
	s.mu.Unlock()
	if !known {
		p.showForm(w, id, "No such user.", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	p.resume(w, r, id, sess)
}

// resume finishes the authorization request as the session's user.
func (p *Provider) resume(w http.ResponseWriter, r *http.Request, id string, sess *session) {
	s := p.store
	s.mu.Lock()
	req, ok := s.authRequests[id]
	_, known := s.users[sess.user]
	if ok && known {
		req.user, req.authTime, req.acr, req.amr, req.done = sess.user, sess.authTime, sess.acr, slices.Clone(sess.amr), true
	}
	s.mu.Unlock()
	if !ok || !known {
		http.Error(w, "the authorization request or the user is gone", http.StatusBadRequest)
		return
	}
	callback := p.op.AuthorizationEndpoint().Absolute(p.issuer) + "/callback?id=" + url.QueryEscape(id)
	http.Redirect(w, r, callback, http.StatusFound)
}
