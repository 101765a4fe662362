package guard

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/token"
	"github.com/gowebpki/jcs"
	"github.com/mark3labs/mcp-go/mcp"
)

// Evidence reads what an approved request proves; *approval.Service
// satisfies it.
type Evidence interface {
	Evidence(ctx context.Context, id string) (*approval.Evidence, error)
}

// Tokens signs approval tokens; *token.Signer satisfies it.
type Tokens interface {
	Sign(c token.Claims) (string, error)
}

// issueToken returns the approval token of an approved request, or "" when
// the guard issues none (Options.Tokens unset).
func (g *Guard) issueToken(ctx context.Context, id string) (string, error) {
	if g.opts.Tokens == nil || g.opts.Evidence == nil {
		return "", nil
	}
	ev, err := g.opts.Evidence.Evidence(ctx, id)
	if err != nil {
		return "", err
	}
	return g.tokenFor(ev)
}

// tokenFor signs the approval token that states ev.
func (g *Guard) tokenFor(ev *approval.Evidence) (string, error) {
	details := []byte(ev.Request.AuthorizationDetails)
	if len(details) == 0 {
		details = []byte("[]")
	}
	// The form the digest covers, so a verifier that recomputes it from
	// the audit log compares like with like.
	details, err := jcs.Transform(details)
	if err != nil {
		return "", fmt.Errorf("authorization_details of %s: %w", ev.Request.ID, err)
	}
	c := token.Claims{
		Audience:             ev.Request.Agent,
		AuthReqID:            ev.Request.ID,
		Tool:                 ev.Request.Tool,
		ArgsSHA256:           hex.EncodeToString(ev.ArgsSHA256[:]),
		AuthorizationDetails: details,
		Digest:               hex.EncodeToString(ev.Digest[:]),
	}
	for _, v := range ev.Votes {
		c.Approvers = append(c.Approvers, token.Approver{
			ID: v.Approver, At: v.At.UTC().Format(time.RFC3339), AssertionSHA256: hex.EncodeToString(v.AssertionSHA256),
		})
	}
	return g.opts.Tokens.Sign(c)
}

// withToken puts the approval token in the result's _meta, where an agent
// finds it to pass on.
func withToken(res *mcp.CallToolResult, tok string) *mcp.CallToolResult {
	if res != nil && tok != "" {
		res.EnsureResultMeta().SetMetaField(token.MCPMetaKey, tok)
	}
	return res
}
