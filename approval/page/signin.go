package page

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Sign-in: a page that may be reached from beyond this machine
// (Options.RequireSignIn, set when approval.listen is not loopback) shows
// nothing of requests, history or credentials to a visitor who has not
// first proved, with a WebAuthn assertion from an enrolled, unrevoked key,
// that they are an approver. The assertion is over a random challenge
// (discoverable: the page names no credential, so it leaks no ids); the
// reward is a short-lived session cookie (Secure on https, HttpOnly,
// SameSite=Strict). Enrollment links stay reachable without a session:
// their token is their authority, and a new approver has no key yet.
//
// Sessions live in memory: a restart signs everyone out.

const (
	sessionCookie = "countersign_session"
	// DefaultSessionTTL bounds a sign-in when Options.SessionTTL is zero.
	DefaultSessionTTL = 15 * time.Minute
)

// signedIn is one session.
type signedIn struct {
	approver string
	expires  time.Time
}

// sessions are the signed-in approvers, by SHA-256 of their cookie.
type sessions struct {
	mu sync.Mutex
	m  map[[32]byte]signedIn
}

func (ss *sessions) add(approver string, expires time.Time) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	for k, v := range ss.m { // drop the expired as new ones come
		if !now.Before(v.expires) {
			delete(ss.m, k)
		}
	}
	ss.m[sha256.Sum256([]byte(tok))] = signedIn{approver: approver, expires: expires}
	return tok, nil
}

func (ss *sessions) get(tok string, now time.Time) (signedIn, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[sha256.Sum256([]byte(tok))]
	if !ok || !now.Before(s.expires) {
		return signedIn{}, false
	}
	return s, true
}

// signInOpen lists what a visitor may reach without a session: the page
// and endpoints of signing in and of enrolling, and the static files.
func signInOpen(path string) bool {
	for _, p := range []string{"/static/", "/signin", "/api/signin/", "/enroll/", "/api/enroll/"} {
		if path == p || strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// requireSession gates everything else behind a session: a page request
// is sent to /signin, an API request refused with 401.
func (s *server) requireSession(ss *sessions, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if signInOpen(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(sessionCookie); err == nil {
			if sess, ok := ss.get(c.Value, time.Now()); ok {
				// Who is signed in, for what the page records in their
				// name without a tap (a grant's revocation).
				next.ServeHTTP(w, r.WithContext(withSignedIn(r.Context(), sess.approver)))
				return
			}
		}
		if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
			w.Header().Set(RefusedHeader, "signin")
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		s.refuse(w, r, http.StatusUnauthorized, "signin", "sign in with your security key first")
	})
}

func (s *server) apiSignInBegin(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if !decodeJSON(w, r, &body) {
		return
	}
	opts, err := s.svc.BeginSignIn(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, opts)
}

// apiSignInFinish verifies the assertion against the enrolled key it names
// and starts a session for that key's approver.
func (s *server) apiSignInFinish(ss *sessions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body finishBody
		if !decodeJSON(w, r, &body) {
			return
		}
		approver, err := s.svc.FinishSignIn(r.Context(), body.Ceremony, body.Credential)
		if err != nil {
			s.opts.Logger.Warn("approval page: sign-in refused", "err", err, "remote", r.RemoteAddr)
			w.Header().Set(RefusedHeader, "signin")
			s.fail(w, err)
			return
		}
		ttl := s.opts.SessionTTL
		tok, err := ss.add(approver, time.Now().Add(ttl))
		if err != nil {
			s.fail(w, err)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", MaxAge: int(ttl.Seconds()),
			Secure: strings.HasPrefix(s.opts.PublicURL, "https://"), HttpOnly: true, SameSite: http.SameSiteStrictMode})
		s.opts.Logger.Info("approval page: signed in", "approver", approver, "remote", r.RemoteAddr)
		writeJSON(w, map[string]string{"approver": approver})
	}
}

func (s *server) pageSignIn(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "signin.html", pageData{Title: "Sign in"})
}
