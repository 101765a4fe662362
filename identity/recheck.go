package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// ErrGone: the provider no longer vouches for the person (removed,
// disabled, or their refresh token revoked): they cannot approve.
var ErrGone = errors.New("identity: the identity provider no longer knows this person")

// Recheck asks the provider again who the person behind refreshToken is
// now: it redeems the refresh token (a provider refuses it for someone it
// removed or disabled) and reads the groups from userinfo with the fresh
// access token. It returns the groups and the refresh token to keep
// (providers that rotate them issue a new one). ErrGone when the provider
// refuses; ErrUnreachable when it cannot be asked.
func (p *Provider) Recheck(ctx context.Context, refreshToken string) (groups []string, keep string, err error) {
	if refreshToken == "" {
		return nil, "", fmt.Errorf("%w: no refresh token was issued at sign-in (does the provider allow the refresh_token grant, or need offline_access among identity.scopes?)", ErrGone)
	}
	op, _, err := p.discover(ctx)
	if err != nil {
		return nil, "", err
	}
	tok, err := p.oauth2(op).TokenSource(p.ctx(ctx), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, "", fmt.Errorf("%w: refresh refused: %s", ErrGone, oneLine(re.ErrorCode+" "+re.ErrorDescription))
		}
		return nil, "", fmt.Errorf("%w: token endpoint: %v", ErrUnreachable, err)
	}
	keep = tok.RefreshToken
	if keep == "" {
		keep = refreshToken
	}
	groups, err = p.userinfoGroups(ctx, op, oauth2.StaticTokenSource(tok))
	return groups, keep, err
}

// userinfoGroups reads the groups claim from the userinfo endpoint.
func (p *Provider) userinfoGroups(ctx context.Context, op *oidc.Provider, ts oauth2.TokenSource) ([]string, error) {
	if op.UserInfoEndpoint() == "" {
		return nil, fmt.Errorf("%w: neither the ID token nor a userinfo endpoint gives the %s claim (identity.groups_claim)", ErrRefused, p.cfg.GroupsClaim)
	}
	info, err := op.UserInfo(p.ctx(ctx), ts)
	if err != nil {
		// go-oidc reports a status as "<code> <status>: body".
		if s := err.Error(); len(s) >= 3 && (s[:3] == fmt.Sprint(http.StatusUnauthorized) || s[:3] == fmt.Sprint(http.StatusForbidden)) {
			return nil, fmt.Errorf("%w: userinfo: %v", ErrGone, err)
		}
		return nil, fmt.Errorf("%w: userinfo: %v", ErrUnreachable, err)
	}
	var claims map[string]any
	if err := info.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: userinfo claims: %v", ErrRefused, err)
	}
	return stringList(claims[p.cfg.GroupsClaim]), nil
}
