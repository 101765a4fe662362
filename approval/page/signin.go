package page

import (
	"context"
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
// Sessions live in memory, where a restart signs everyone out, unless
// Options.Sessions keeps them (in the database replicas share, so that a
// session begun on one replica is honoured by all).

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

// Sessions keep sign-in sessions beyond this process; *store.SignInSessions
// satisfies it. A session is known by the SHA-256 of its cookie.
type Sessions interface {
	StartSession(ctx context.Context, tokenSHA256 [32]byte, approver string, expires time.Time) error
	Session(ctx context.Context, tokenSHA256 [32]byte, now time.Time) (approver string, ok bool, err error)
}

// sessions are the signed-in approvers, by SHA-256 of their cookie: in
// kept when set, else in m.
type sessions struct {
	kept Sessions

	mu sync.Mutex
	m  map[[32]byte]signedIn
}

func (ss *sessions) add(ctx context.Context, approver string, expires time.Time) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if ss.kept != nil {
		if err := ss.kept.StartSession(ctx, sha256.Sum256([]byte(tok)), approver, expires); err != nil {
			return "", err
		}
		return tok, nil
	}
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

// get is the session tok names at now. A session that cannot be read
// is no session (the error says why): the visitor signs in again.
func (ss *sessions) get(ctx context.Context, tok string, now time.Time) (signedIn, bool, error) {
	if ss.kept != nil {
		approver, ok, err := ss.kept.Session(ctx, sha256.Sum256([]byte(tok)), now)
		return signedIn{approver: approver}, ok && err == nil, err
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[sha256.Sum256([]byte(tok))]
	if !ok || !now.Before(s.expires) {
		return signedIn{}, false, nil
	}
	return s, true, nil
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
			sess, ok, err := ss.get(r.Context(), c.Value, time.Now())
			if err != nil {
				s.opts.Logger.Error("approval page: cannot read sign-in sessions", "err", err)
			}
			if ok {
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
		tok, err := ss.add(r.Context(), approver, time.Now().Add(ttl))
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
