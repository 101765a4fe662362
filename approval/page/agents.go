package page

import (
	"errors"
	"net/http"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/freeze"
)

// The page's agents: the list, and the Freeze button.

func (s *server) apiAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.svc.Agents(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, struct {
		Agents []freeze.AgentView `json:"agents"`
	}{agents})
}

// apiFreezeAgent is the page's Freeze button: no tap, since it only takes
// authority away (as Revoke of a grant); recorded with the signed-in
// approver, or LoopbackRevoker on a page that needs no sign-in.
// Unfreezing is not offered here: giving authority back is the CLI's.
func (s *server) apiFreezeAgent(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	if !decodeJSON(w, r, &body) {
		return
	}
	by, _ := r.Context().Value(signedInKey{}).(string)
	if by == "" {
		by = approval.LoopbackRevoker
	}
	agent := r.PathValue("name")
	st, err := s.svc.FreezeAgent(r.Context(), agent, by, body.Reason)
	var fe *freeze.FrozenError
	if errors.As(err, &fe) {
		writeError(w, http.StatusConflict, "already_frozen", fe.Error())
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	f, err := s.svc.Frozen(r.Context(), agent)
	if err != nil || f == nil {
		s.fail(w, errors.Join(err, errors.New("the freeze is not in the database")))
		return
	}
	writeJSON(w, struct {
		Frozen    *freeze.View `json:"frozen"`
		Cancelled []string     `json:"cancelled"`
		Revoked   []string     `json:"revoked"`
	}{f.View(), append([]string{}, st.Cancelled...), append([]string{}, st.Revoked...)})
}
