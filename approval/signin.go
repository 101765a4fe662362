package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
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
	tok := b64(b)
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
func (s *Service) requireSession(ss *sessions, next http.Handler) http.Handler {
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

// SignInOptions is what the sign-in page passes to
// PublicKeyCredential.parseRequestOptionsFromJSON.
type SignInOptions struct {
	Ceremony  string                                     `json:"ceremony"`
	PublicKey protocol.PublicKeyCredentialRequestOptions `json:"publicKey"`
}

func (s *Service) apiSignInBegin(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if !decodeJSON(w, r, &body) {
		return
	}
	a, session, err := s.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		s.fail(w, err)
		return
	}
	id, err := s.storeCeremony(r.Context(), "signin", "", nil, "", session, s.now().Add(ceremonyTTL))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, SignInOptions{Ceremony: id, PublicKey: a.Response})
}

// apiSignInFinish verifies the assertion against the enrolled key it names
// and starts a session for that key's approver.
func (s *Service) apiSignInFinish(ss *sessions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body finishBody
		if !decodeJSON(w, r, &body) {
			return
		}
		approver, err := s.verifySignIn(r, body)
		if err != nil {
			s.opts.Logger.Warn("approval page: sign-in refused", "err", err, "remote", r.RemoteAddr)
			w.Header().Set(RefusedHeader, "signin")
			s.fail(w, err)
			return
		}
		ttl := s.opts.SessionTTL
		if ttl <= 0 {
			ttl = DefaultSessionTTL
		}
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

func (s *Service) verifySignIn(r *http.Request, body finishBody) (string, error) {
	ctx := r.Context()
	_, session, err := s.takeCeremony(ctx, body.Ceremony, "signin", "", nil)
	if err != nil {
		return "", err
	}
	p, err := parseAssertion(body.Credential)
	if err != nil {
		return "", err
	}
	cred, err := s.credential(ctx, s.db, p.RawID)
	if err != nil {
		return "", err
	}
	if cred == nil {
		return "", failf(ErrUnknownCredential, "not an enrolled key")
	}
	if cred.revoked {
		return "", failf(ErrRevokedCredential, "the key was revoked")
	}
	if c := p.Response.AuthenticatorData.Counter; (c != 0 || cred.signCount != 0) && c <= cred.signCount {
		return "", failf(ErrCounter, "sign counter %d is not above the stored %d: possible cloned key", c, cred.signCount)
	}
	h, err := s.handle(ctx, cred.approverID)
	if err != nil {
		return "", err
	}
	session.UserID = h
	session.AllowedCredentialIDs = [][]byte{p.RawID}
	user := approverUser{id: cred.approverID, name: s.approverName(cred.approverID), handle: h, creds: []webauthn.Credential{cred.cred}}
	updated, err := s.wa.ValidateLogin(user, session, p)
	if err != nil {
		return "", failf(ErrSignature, "%s", protoDetail(err))
	}
	if updated.Authenticator.CloneWarning {
		return "", failf(ErrCounter, "possible cloned key")
	}
	credJSON, err := json.Marshal(updated)
	if err != nil {
		return "", err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE approval_credentials SET sign_count = ?, credential = ?, last_used_at = ?
		WHERE id = ? AND revoked_at = 0 AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		p.Response.AuthenticatorData.Counter, credJSON, s.now().UnixNano(), cred.id, p.Response.AuthenticatorData.Counter, p.Response.AuthenticatorData.Counter)
	if err != nil {
		return "", err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return "", failf(ErrCounter, "sign counter did not increase (or the key was revoked meanwhile)")
	}
	if _, ok := s.approvers[cred.approverID]; !ok {
		return "", errors.Join(ErrUnknownApprover, failf(ErrApproverNotAllowed, "the key's approver is no longer in the config"))
	}
	return cred.approverID, nil
}

func (s *Service) pageSignIn(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "signin.html", pageData{Title: "Sign in"})
}
