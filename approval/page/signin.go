package page

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/identity"
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
	person   *identity.Person // signed in through the identity provider (oidc.go); nil: with a key
}

// Sessions keep sign-in sessions beyond this process; *store.SignInSessions
// satisfies it. A session is known by the SHA-256 of its cookie.
type Sessions interface {
	StartSession(ctx context.Context, tokenSHA256 [32]byte, approver string, identity []byte, expires time.Time) error
	Session(ctx context.Context, tokenSHA256 [32]byte, now time.Time) (approver string, identity []byte, ok bool, err error)
}

// sessions are the signed-in approvers, by SHA-256 of their cookie: in
// kept when set, else in m.
type sessions struct {
	kept Sessions
	now  func() time.Time // the service's clock

	mu sync.Mutex
	m  map[[32]byte]signedIn
}

func (ss *sessions) add(ctx context.Context, approver string, person *identity.Person, expires time.Time) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if ss.kept != nil {
		var id []byte
		if person != nil {
			var err error
			if id, err = json.Marshal(person); err != nil {
				return "", err
			}
		}
		if err := ss.kept.StartSession(ctx, sha256.Sum256([]byte(tok)), approver, id, expires); err != nil {
			return "", err
		}
		return tok, nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	for k, v := range ss.m { // drop the expired as new ones come
		if !now.Before(v.expires) {
			delete(ss.m, k)
		}
	}
	ss.m[sha256.Sum256([]byte(tok))] = signedIn{approver: approver, expires: expires, person: person}
	return tok, nil
}

// get is the session tok names at now. A session that cannot be read
// is no session (the error says why): the visitor signs in again.
func (ss *sessions) get(ctx context.Context, tok string, now time.Time) (signedIn, bool, error) {
	if ss.kept != nil {
		approver, id, ok, err := ss.kept.Session(ctx, sha256.Sum256([]byte(tok)), now)
		s := signedIn{approver: approver}
		if ok && err == nil && id != nil {
			s.person = new(identity.Person)
			if err := json.Unmarshal(id, s.person); err != nil {
				return signedIn{}, false, err
			}
		}
		return s, ok && err == nil, err
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
			sess, ok, err := ss.get(r.Context(), c.Value, s.svc.Now())
			if err != nil {
				s.opts.Logger.Error("approval page: cannot read sign-in sessions", "err", err)
			}
			if ok {
				// Who is signed in, for what the page records in their
				// name without a tap (a grant's revocation).
				ctx := withSignedIn(r.Context(), sess.approver)
				if sess.person != nil {
					ctx = withPerson(ctx, sess.person)
				}
				next.ServeHTTP(w, r.WithContext(ctx))
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
		if s.opts.Identity != nil && identity.IsApproverID(approver) {
			// A person of the identity provider signs in there: a key
			// alone would skip its login, max_auth_age and groups.
			s.refuse(w, r, http.StatusForbidden, "signin", "your key belongs to a company account: sign in with your company account")
			return
		}
		if err := s.startSession(w, r, ss, approver, nil, s.svc.Now().Add(s.opts.SessionTTL)); err != nil {
			s.fail(w, err)
			return
		}
		s.opts.Logger.Info("approval page: signed in", "approver", approver, "remote", r.RemoteAddr)
		writeJSON(w, map[string]string{"approver": approver})
	}
}

// startSession signs approver in (person: through the identity provider)
// until expires and gives the browser the session's cookie.
func (s *server) startSession(w http.ResponseWriter, r *http.Request, ss *sessions, approver string, person *identity.Person, expires time.Time) error {
	tok, err := ss.add(r.Context(), approver, person, expires)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", MaxAge: int(expires.Sub(s.svc.Now()).Seconds()),
		Secure: s.https(), HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return nil
}

func (s *server) https() bool { return strings.HasPrefix(s.opts.PublicURL, "https://") }

func (s *server) pageSignIn(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "signin.html", s.signInData(""))
}
