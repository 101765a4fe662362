package page

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The page's defences against its visitors (see visitor.go for why their
// text is untrusted): refusals labelled for the metrics, ids checked for
// the shape the server issues before anything looks them up, and rate
// limits on begin and finish per client address and per request.

// RefusedHeader names the check that refused a request at the HTTP layer
// (host, origin, csrf, format, rate). The metrics wrapper counts responses by
// it; its values are the fixed words of this package, never visitor text.
const RefusedHeader = "Countersign-Refused"

// Page limits. A person taps once per request, the page sends begin then
// finish: these leave a person more than enough and a script very little.
const (
	perAddressRate  = rate.Limit(5) // begin/finish per second per client address
	perAddressBurst = 20
	perRequestRate  = rate.Limit(1) // begin/finish per second per request (or link)
	perRequestBurst = 8
	// limiterKeys bounds the limiter tables; over it, idle entries are
	// dropped, and if none are idle the request is refused (fail closed).
	limiterKeys = 4096
)

// refuse answers a request refused before it reached a handler's logic: it
// logs it (visitor text only as bounded, quoted attributes), labels the
// response for the metrics, and writes the JSON error.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, status int, check, msg string) {
	s.opts.Logger.Warn("approval page: refused", "check", check, "method", r.Method, "path", bounded(r.URL.Path), "remote", r.RemoteAddr)
	w.Header().Set(RefusedHeader, check)
	writeError(w, status, check, msg)
}

// requirePathID refuses a request whose {id} (or {token}) path value does
// not have the shape the server issues, before anything looks it up.
func (s *server) requirePathID(name string, valid func(string) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !valid(r.PathValue(name)) {
			s.refuse(w, r, http.StatusNotFound, "bad_id", "no such "+name+" (malformed)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limiters is a table of token buckets keyed by client address or by
// request; entries that have refilled (idle) are dropped when it fills.
type limiters struct {
	mu    sync.Mutex
	r     rate.Limit
	burst int
	m     map[string]*rate.Limiter
}

func newLimiters(r rate.Limit, burst int) *limiters {
	return &limiters{r: r, burst: burst, m: map[string]*rate.Limiter{}}
}

// allow takes a token for key; false when the bucket is empty, or the table
// is full of keys that are all busy.
func (l *limiters) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[key]
	if !ok {
		if len(l.m) >= limiterKeys {
			for k, v := range l.m {
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.m, k)
				}
			}
			if len(l.m) >= limiterKeys {
				return false
			}
		}
		lim = rate.NewLimiter(l.r, l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

// pageLimits rate limits the ceremony endpoints.
type pageLimits struct {
	byAddr, byTarget *limiters
	refuse           func(w http.ResponseWriter, r *http.Request, status int, check, msg string)
	// now is the service's clock (Options.Now), so that buckets refill by
	// the same time as ceremonies expire, and a test's clock decides both.
	now func() time.Time
}

func newPageLimits(refuse func(w http.ResponseWriter, r *http.Request, status int, check, msg string), now func() time.Time) *pageLimits {
	return &pageLimits{byAddr: newLimiters(perAddressRate, perAddressBurst), byTarget: newLimiters(perRequestRate, perRequestBurst), refuse: refuse, now: now}
}

// limit wraps a ceremony endpoint whose target (request id or enrollment
// token) is the path value name. It runs after the format check, so the
// table's keys are ids the server could have issued.
func (p *pageLimits) limit(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := p.now()
		addr := r.RemoteAddr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = host
		}
		// name "" (sign-in) has no target: only the address is limited, so
		// one visitor cannot use up everyone's sign-ins.
		if !p.byAddr.allow(addr, now) || (name != "" && !p.byTarget.allow(name+":"+r.PathValue(name), now)) {
			w.Header().Set("Retry-After", "1")
			p.refuse(w, r, http.StatusTooManyRequests, "rate_limited", "too many attempts; wait a moment and try again")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bounded cuts visitor text for the process log (slog quotes it).
func bounded(s string) string {
	const n = 200
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
