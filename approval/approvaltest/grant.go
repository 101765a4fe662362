package approvaltest

import (
	"net/http"
	"net/url"
	"time"

	"github.com/countersign/countersign/vocab"
)

// Grant is a standing grant as the page lists it (GET /api/grants).
type Grant struct {
	ID        string    `json:"id"`
	RequestID string    `json:"requestId"`
	Agent     string    `json:"agent"`
	Tool      string    `json:"tool"`
	Approver  string    `json:"approver"`
	Condition string    `json:"condition"`
	MaxCalls  int       `json:"maxCalls"`
	Used      int       `json:"used"`
	ExpiresAt time.Time `json:"expiresAt"`
	Active    bool      `json:"active"`
	RevokedBy string    `json:"revokedBy"`
}

// ApproveWithGrant taps "Approve and grant" on a request with key: the
// request is approved and, with the same assertion, a grant for the
// duration (whole seconds) and number of calls given is created.
func (p *Page) ApproveWithGrant(id string, key *SoftKey, d time.Duration, calls int) (*Request, error) {
	return p.decide(id, map[string]any{"decision": vocab.Approve, "grant": map[string]any{"seconds": int64(d / time.Second), "calls": calls}}, key)
}

// Grants lists the grants the page shows, newest first.
func (p *Page) Grants() ([]Grant, error) {
	var out struct {
		Grants []Grant `json:"grants"`
	}
	if err := p.do(http.MethodGet, "/api/grants", nil, &out); err != nil {
		return nil, err
	}
	return out.Grants, nil
}

// RevokeGrant taps Revoke on a grant.
func (p *Page) RevokeGrant(id string) (*Grant, error) {
	var g Grant
	if err := p.do(http.MethodPost, "/api/grants/"+url.PathEscape(id)+"/revoke", struct{}{}, &g); err != nil {
		return nil, err
	}
	return &g, nil
}
