package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard"
	"github.com/countersign/countersign/token"
)

// Issuer is the iss of approval tokens and of CIBA discovery: http.issuer,
// else the agent listener's URL, else (serving stdio, with no listener for
// agents) the approver page's public URL, which names this Countersign to
// people.
func Issuer(c *config.Config) string {
	if c.HTTP.Issuer != "" {
		return strings.TrimRight(c.HTTP.Issuer, "/")
	}
	if host, port, err := net.SplitHostPort(c.HTTP.Addr); err == nil && port != "" {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "localhost"
		}
		return "http://" + net.JoinHostPort(host, port)
	}
	return strings.TrimRight(c.Approval.PublicURL, "/")
}

// TokenSigner signs approval tokens with the key derived from the server
// key in the data directory.
func TokenSigner(c *config.Config) (*token.Signer, error) {
	serverKey, err := ServerKey(c)
	if err != nil {
		return nil, err
	}
	key, err := token.DeriveKey(serverKey)
	if err != nil {
		return nil, err
	}
	retired, err := retiredTokenKeys(c, time.Now())
	if err != nil {
		return nil, fmt.Errorf("retired server keys: %w", err)
	}
	return token.NewSigner(key, Issuer(c), token.SignerOptions{Retired: retired})
}

// cibaRoutes are the CIBA endpoints, discovery and the key set, for the
// agent listener. recent is the last day of the audit log, oldest first:
// the CIBA payments in it count again in the transfer usage windows.
func cibaRoutes(ctx context.Context, c *config.Config, g *guard.Guard, keys *token.Signer, recent []audit.Entry, holders func(context.Context) (map[string]bool, error), log *slog.Logger) (*ciba.Server, map[string]http.Handler, error) {
	_, enabled := c.Tools[ciba.Tool]
	srv, err := ciba.New(ciba.Options{
		Issuer: Issuer(c), Guard: g, Keys: keys, Agents: c.HTTP.Agents, Approvers: c.Approvers,
		Accounts: c.Ledger.Accounts, Upstreams: c.Upstreams,
		Enabled: enabled, Logger: log, Holders: holders,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := srv.RestoreUsage(ctx, recent); err != nil {
		return nil, nil, fmt.Errorf("rebuilding the usage windows of CIBA requests: %w", err)
	}
	return srv, srv.Routes(), nil
}
