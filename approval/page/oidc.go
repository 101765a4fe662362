package page

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/countersign/countersign/identity"
)

// Sign-in through the company's identity provider (Options.Identity): a
// plain link to /signin/oidc sends the browser to the provider (the
// authorization code flow, package identity), which sends it back to
// /signin/oidc/callback. The attempt's state, nonce and PKCE verifier wait
// in between in a cookie of their own, HttpOnly and SameSite=Lax (the
// callback is a navigation from the provider's site, which a Strict
// cookie would not follow), scoped to /signin/oidc and used once. A person
// whose groups map to no role is not signed in. The session is bound to
// the person as the provider described them (issuer, subject, auth_time,
// acr/amr, groups) and ends at the latest when their login at the
// provider is approval.max_auth_age old; the link then asks the provider
// for a fresh login (prompt=login).

const (
	oidcCookie   = "countersign_oidc"
	oidcPath     = "/signin/oidc"
	oidcLoginTTL = 10 * time.Minute
)

// CallbackPath is where the provider sends the browser back: register
// <public URL>/signin/oidc/callback as the client's redirect URI.
const CallbackPath = oidcPath + "/callback"

type personKey struct{}

func withPerson(ctx context.Context, p *identity.Person) context.Context {
	return context.WithValue(ctx, personKey{}, p)
}

// personOf is the person signed in through the provider, or nil.
func personOf(r *http.Request) *identity.Person {
	p, _ := r.Context().Value(personKey{}).(*identity.Person)
	return p
}

// oidcStart sends the browser to the provider with a new attempt's
// secrets; ?fresh=1 asks the provider for a fresh login.
func (s *server) oidcStart(w http.ResponseWriter, r *http.Request) {
	l := identity.NewLogin(r.URL.Query().Get("fresh") != "")
	u, err := s.opts.Identity.AuthURL(r.Context(), l)
	if err != nil {
		s.opts.Logger.Warn("approval page: identity provider", "err", err)
		s.signInProblem(w, r, http.StatusServiceUnavailable, "The identity provider ("+s.opts.Identity.Issuer()+") cannot be reached, so nobody can sign in through it now. Try again shortly.")
		return
	}
	b, _ := json.Marshal(l)
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: oidcPath,
		MaxAge: int(oidcLoginTTL.Seconds()), Secure: s.https(), HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, u, http.StatusSeeOther)
}

// oidcCallback finishes the attempt this browser started and signs the
// person in.
func (s *server) oidcCallback(ss *sessions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var l identity.Login
		c, err := r.Cookie(oidcCookie)
		if err == nil {
			var b []byte
			if b, err = base64.RawURLEncoding.DecodeString(c.Value); err == nil {
				err = json.Unmarshal(b, &l)
			}
		}
		// Used once, whatever comes of it.
		http.SetCookie(w, &http.Cookie{Name: oidcCookie, Path: oidcPath, MaxAge: -1, Secure: s.https(), HttpOnly: true, SameSite: http.SameSiteLaxMode})
		q := r.URL.Query()
		switch {
		case q.Get("error") != "":
			s.signInProblem(w, r, http.StatusUnauthorized, "The identity provider did not sign you in: "+bounded(q.Get("error")+" "+q.Get("error_description")))
			return
		case err != nil:
			s.signInProblem(w, r, http.StatusBadRequest, "This browser did not start this sign-in (or took over 10 minutes). Sign in again.")
			return
		}
		person, tok, err := s.opts.Identity.Finish(r.Context(), l, q.Get("state"), q.Get("code"))
		if errors.Is(err, identity.ErrStale) && !l.Fresh {
			// The provider resumed a login older than max_auth_age:
			// ask it for a fresh one, once.
			http.Redirect(w, r, oidcPath+"?fresh=1", http.StatusSeeOther)
			return
		}
		if err != nil {
			s.opts.Logger.Warn("approval page: sign-in through the identity provider refused", "err", err, "remote", r.RemoteAddr)
			status, msg := http.StatusUnauthorized, "Sign-in refused: "+err.Error()
			if errors.Is(err, identity.ErrUnreachable) {
				status, msg = http.StatusServiceUnavailable, "The identity provider cannot be reached, so the sign-in cannot finish. Try again shortly."
			}
			s.signInProblem(w, r, status, msg)
			return
		}
		if len(person.Roles) == 0 {
			s.opts.Logger.Warn("approval page: signed in at the provider, but no role", "subject", person.Subject, "groups", person.Groups)
			s.signInProblem(w, r, http.StatusForbidden, "You signed in at the identity provider as "+person.DisplayName()+
				", but none of your groups there gives an approver role here (identity.roles). Ask an administrator.")
			return
		}
		now := s.svc.Now()
		if err := s.opts.People.Remember(r.Context(), person, tok.RefreshToken, now); err != nil {
			s.fail(w, err)
			return
		}
		expires := now.Add(s.opts.SessionTTL)
		if end := person.AuthTime.Add(s.opts.MaxAuthAge); end.Before(expires) {
			expires = end
		}
		if err := s.startSession(w, r, ss, person.Approver(), person, expires); err != nil {
			s.fail(w, err)
			return
		}
		s.opts.Logger.Info("approval page: signed in through the identity provider", "approver", person.Approver(),
			"subject", person.Subject, "roles", person.Roles, "remote", r.RemoteAddr)
		// A page, not a redirect: the session cookie is SameSite=Strict,
		// and a browser does not send it on the rest of a navigation the
		// provider's site began; this page's own move to / is same-site.
		s.render(w, r, "signedin.html", pageData{Title: "Signed in", Person: person})
	}
}

// signInProblem shows the sign-in page with what went wrong.
func (s *server) signInProblem(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.renderStatus(w, r, status, "signin.html", s.signInData(msg))
}

// signInData is the sign-in page's: the provider's link when there is
// one, the key's button always (approvers listed in mcp.yaml).
func (s *server) signInData(problem string) pageData {
	d := pageData{Title: "Sign in", Problem: problem}
	if s.opts.Identity != nil {
		d.Provider = s.opts.Identity.Issuer()
	}
	return d
}

// apiSelfEnroll gives a person signed in through the provider, with an
// approver role, a one-time link to register their own key; the page
// then opens it. A key sign-in (an approver of mcp.yaml) gets none: an
// admin makes their links.
func (s *server) apiSelfEnroll(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if !decodeJSON(w, r, &body) {
		return
	}
	p := personOf(r)
	if p == nil {
		s.refuse(w, r, http.StatusForbidden, "signin", "sign in through the identity provider to register your own key")
		return
	}
	if len(p.Roles) == 0 {
		s.refuse(w, r, http.StatusForbidden, "role", "your groups at the identity provider give you no approver role")
		return
	}
	link, err := s.svc.CreateEnrollment(r.Context(), p.Approver())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, map[string]string{"url": link})
}
