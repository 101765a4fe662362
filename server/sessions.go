package server

import (
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/google/uuid"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// sessionPrefix starts every Mcp-Session-Id this server issues.
const sessionPrefix = "cs-"

// agentSessions issues Streamable HTTP session ids and remembers which
// agent each belongs to. A session id that was never issued, has ended, or
// belongs to another agent's token is unknown (404), so a guessed or stolen
// id opens nothing. (Protocol 2026-07-28 has no sessions; this applies to
// clients on 2025-11-25.)
type agentSessions struct {
	mu    sync.Mutex
	owner map[string]string // live session id -> agent
}

func newAgentSessions() *agentSessions {
	return &agentSessions{owner: map[string]string{}}
}

var errUnknownSession = errors.New("unknown session")

// ResolveSessionIdManager binds the session manager to the request's
// authenticated agent.
func (a *agentSessions) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	agent := "unknown"
	if r != nil {
		agent = AgentFrom(r.Context())
	}
	return agentSessionView{a, agent}
}

// owns reports whether id is a live session of agent.
func (a *agentSessions) owns(id, agent string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	owner, ok := a.owner[id]
	return ok && owner == agent
}

type agentSessionView struct {
	a     *agentSessions
	agent string
}

func (v agentSessionView) Generate() string {
	id := sessionPrefix + uuid.NewString()
	v.a.mu.Lock()
	defer v.a.mu.Unlock()
	v.a.owner[id] = v.agent
	return id
}

func (v agentSessionView) Validate(id string) (terminated bool, err error) {
	if !v.a.owns(id, v.agent) {
		return false, errUnknownSession
	}
	return false, nil
}

func (v agentSessionView) Terminate(id string) (notAllowed bool, err error) {
	v.a.mu.Lock()
	defer v.a.mu.Unlock()
	if owner, ok := v.a.owner[id]; !ok || owner != v.agent {
		return true, nil
	}
	delete(v.a.owner, id)
	return false, nil
}

// of returns agent's live session ids.
func (a *agentSessions) of(agent string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id, owner := range a.owner {
		if owner == agent {
			ids = append(ids, id)
		}
	}
	return ids
}

// end forgets a session the transport ended on its own (idle, shutdown).
func (a *agentSessions) end(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.owner, id)
}

// checkSession answers 404 to a request on /mcp that names a session this
// agent does not have, before the transport sees it: a DELETE of an unknown
// session must not look like success. After a DELETE that ended a session,
// ended runs with its id: the transport does not cancel calls that a
// POST-only session left running.
func (a *agentSessions) checkSession(next http.Handler, ended func(id string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Mcp-Session-Id")
		if id != "" && strings.HasPrefix(r.Header.Get("Mcp-Protocol-Version"), "2026-") {
			id = "" // the header means nothing under 2026-07-28
		}
		if id != "" && !a.owns(id, AgentFrom(r.Context())) {
			http.Error(w, "unknown or ended session", http.StatusNotFound)
			return
		}
		next.ServeHTTP(w, r)
		if id != "" && r.Method == http.MethodDelete && !a.owns(id, AgentFrom(r.Context())) {
			ended(id)
		}
	})
}
