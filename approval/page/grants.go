package page

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/grant"
)

// The page's grants: the list, approving with a grant, and Revoke.

// grantsShown bounds the grants the page lists.
const grantsShown = 50

// grantBody is the page's choice when it approves with a grant.
type grantBody struct {
	Seconds int64 `json:"seconds"`
	Calls   int   `json:"calls"`
}

func (b grantBody) choice() grant.Choice {
	return grant.Choice{Duration: time.Duration(b.Seconds) * time.Second, Calls: b.Calls}
}

type signedInKey struct{}

func withSignedIn(ctx context.Context, approver string) context.Context {
	return context.WithValue(ctx, signedInKey{}, approver)
}

// grantJSON is the page's view of a grant.
type grantJSON struct {
	ID        string     `json:"id"`
	RequestID string     `json:"requestId"`
	Agent     string     `json:"agent"`
	Tool      string     `json:"tool"`
	Approver  string     `json:"approver"`
	Condition string     `json:"condition"`
	MaxCalls  int        `json:"maxCalls"`
	Used      int        `json:"used"`
	ExpiresAt time.Time  `json:"expiresAt"`
	Active    bool       `json:"active"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	RevokedBy string     `json:"revokedBy,omitempty"`
}

func grantToJSON(g *grant.Grant, now time.Time) grantJSON {
	out := grantJSON{ID: g.ID, RequestID: g.RequestID, Agent: g.Agent, Tool: g.Tool, Approver: g.ApproverName,
		Condition: g.Condition, MaxCalls: g.MaxCalls, Used: g.Used, ExpiresAt: g.ExpiresAt, Active: g.Active(now), RevokedBy: g.RevokedByName}
	if !g.RevokedAt.IsZero() {
		out.RevokedAt = &g.RevokedAt
	}
	return out
}

func (s *server) apiGrants(w http.ResponseWriter, r *http.Request) {
	gs, err := s.svc.Grants(r.Context(), grantsShown)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := struct {
		Grants []grantJSON `json:"grants"`
	}{Grants: []grantJSON{}}
	now := s.svc.Now()
	for _, g := range gs {
		out.Grants = append(out.Grants, grantToJSON(g, now))
	}
	writeJSON(w, out)
}

func (s *server) apiRevokeGrant(w http.ResponseWriter, r *http.Request) {
	var body struct{}
	if !decodeJSON(w, r, &body) {
		return
	}
	by, _ := r.Context().Value(signedInKey{}).(string)
	if by == "" {
		by = approval.LoopbackRevoker
	}
	g, err := s.svc.RevokeGrant(r.Context(), r.PathValue("id"), by)
	if errors.Is(err, grant.ErrNoGrant) {
		writeError(w, http.StatusNotFound, "not_found", "no such grant")
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, grantToJSON(g, s.svc.Now()))
}
