package page

import (
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
)

// Options configure the page. Whoever wires the page sets them from the
// same configuration as the service's approval.Options: the page refuses a
// POST whose Origin is not in Origins, and the service refuses an assertion
// whose origin is not in its own, so the two lists must be the same.
type Options struct {
	Origins   []string // exact origins, with port: "http://localhost:8710"
	PublicURL string   // the page's address as people see it; default Origins[0]

	// AllowedHosts is the Host header allow-list (DNS rebinding); default:
	// the hosts of Origins.
	AllowedHosts []string
	MaxBodyBytes int64 // POST body limit; default DefaultMaxBodyBytes

	// RequireSignIn gates the page behind a WebAuthn sign-in (signin.go),
	// for a page reachable beyond loopback. SessionTTL bounds a sign-in;
	// default DefaultSessionTTL.
	RequireSignIn bool
	SessionTTL    time.Duration
	// Sessions, when set, keep sign-in sessions where every replica
	// reads them (the database); nil: in this process's memory.
	Sessions Sessions

	// Identity, when set, signs people in through the company's
	// identity provider (oidc.go), and the page then always needs a
	// sign-in. People keeps what the provider said of each; MaxAuthAge
	// (approval.max_auth_age, default config.DefaultMaxAuthAge) ends a
	// session when the person's login at the provider is that old.
	Identity   *identity.Provider
	People     *identity.People
	MaxAuthAge time.Duration

	Logger *slog.Logger // default: discard
}

// DefaultMaxBodyBytes bounds a POST body when Options.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 64 << 10

// withDefaults returns o with its zero fields given their defaults.
func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxAuthAge <= 0 {
		o.MaxAuthAge = config.DefaultMaxAuthAge
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.PublicURL == "" && len(o.Origins) > 0 {
		o.PublicURL = o.Origins[0]
	}
	o.PublicURL = strings.TrimRight(o.PublicURL, "/")
	if len(o.AllowedHosts) == 0 {
		for _, origin := range o.Origins {
			if u, err := url.Parse(origin); err == nil && u.Host != "" {
				o.AllowedHosts = append(o.AllowedHosts, u.Host)
			}
		}
	}
	return o
}
