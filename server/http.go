package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/countersign/countersign/config"
)

type agentKey struct{}

// WithAgent records who is calling; the guard gets it for policy and audit.
func WithAgent(ctx context.Context, agent string) context.Context {
	return context.WithValue(ctx, agentKey{}, agent)
}

// AgentFrom returns the authenticated agent, or "unknown" (which no policy
// should trust) when the transport set none.
func AgentFrom(ctx context.Context) string {
	if a, ok := ctx.Value(agentKey{}).(string); ok && a != "" {
		return a
	}
	return "unknown"
}

// limitBody answers 413 to bodies over max. It reads the body up front so
// the MCP handlers never see a truncated message and answer it as malformed.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
			r.Body.Close()
			if err != nil {
				http.Error(w, "cannot read request body", http.StatusBadRequest)
				return
			}
			if int64(len(body)) > max {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, r)
	})
}

// checkHost refuses requests whose Host is not one of the configured names,
// so a web page on another origin cannot reach a loopback listener through
// DNS rebinding. Ports are ignored: the listener decides those.
func checkHost(allowed []string, next http.Handler) http.Handler {
	if len(allowed) == 0 {
		return next
	}
	names := map[string]bool{}
	for _, h := range allowed {
		names[strings.ToLower(hostname(h))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !names[strings.ToLower(hostname(r.Host))] {
			http.Error(w, "host not allowed", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// agentToken is one static token of http.agents: its agent and the SHA-256
// of its token.
type agentToken struct {
	id   string
	hash []byte
}

// SetAgents puts the static tokens of http.agents in force for the
// requests that arrive from now on (a reloaded configuration): a removed
// token is refused at its next request, an added one accepted.
func (s *Server) SetAgents(agents []config.Agent) {
	keys := make([]agentToken, 0, len(agents))
	reserved := []string{"anonymous", "unknown", s.opts.Config.Server.StdioAgent}
	for _, a := range agents {
		h, _ := hex.DecodeString(a.TokenSHA256) // validated by config
		keys = append(keys, agentToken{a.ID, h})
		reserved = append(reserved, a.ID)
	}
	s.auth.set(nil, reserved) // before the tokens: no moment when an OAuth token may take a new agent's name
	s.agents.Store(&keys)
}

// SetOAuth puts a reloaded http.oauth in force for the requests that
// arrive from now on (see liveAuth).
func (s *Server) SetOAuth(o config.OAuth) { s.auth.set(&o, nil) }

// authenticate maps a bearer token to an agent id: a static token of
// http.agents (read from agents at each request), or with http.oauth an
// OAuth access token (rs, nil when off).
// Only static token hashes are configured, and they are compared in constant
// time. With neither configured every caller is "anonymous": cmd allows that
// only on loopback.
func authenticate(agents *atomic.Pointer[[]agentToken], live *atomic.Pointer[resourceServer], log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs := live.Load()
		keys := *agents.Load()
		if len(keys) == 0 && rs == nil {
			next.ServeHTTP(w, r.WithContext(WithAgent(r.Context(), "anonymous")))
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		token = strings.TrimSpace(token)
		if ok {
			sum := sha256.Sum256([]byte(token))
			for _, k := range keys {
				if subtle.ConstantTimeCompare(sum[:], k.hash) == 1 {
					next.ServeHTTP(w, r.WithContext(WithAgent(r.Context(), k.id)))
					return
				}
			}
		}
		if rs != nil {
			refused := &refusal{status: http.StatusUnauthorized, description: "no bearer token"}
			if ok && token != "" {
				var agent string
				if agent, refused = rs.agent(r.Context(), token); refused == nil {
					next.ServeHTTP(w, r.WithContext(WithAgent(r.Context(), agent)))
					return
				}
			}
			log.Warn("agent authentication failed", "remote", r.RemoteAddr, "path", r.URL.Path, "status", refused.status, "error", refused.code, "why", refused.description)
			rs.challenge(w, refused)
			return
		}
		log.Warn("agent authentication failed", "remote", r.RemoteAddr, "path", r.URL.Path)
		w.Header().Set("WWW-Authenticate", `Bearer realm="countersign"`)
		http.Error(w, "a valid bearer token is required", http.StatusUnauthorized)
	})
}
