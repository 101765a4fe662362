package page

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
)

// The layers every request passes before a handler: security headers
// and CSP, the Host check, Origin and CSRF checks on every POST, and the
// JSON body limit.

const csrfCookie = "countersign_csrf"

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
func isSafe(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
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
