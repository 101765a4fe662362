package approval

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"
)

// What a visitor of the approver page sends is untrusted: anyone on the
// listener's network can POST with a cookie and header pair of their own
// choosing, so CSRF protection stops other sites, not other local
// processes. This file keeps what they send out of the signed log
// (invariant 12) and bounds how much work and how many rows they cause:
//
//   - ids and tokens in paths and bodies must have the shape the server
//     issues (a UUID, a 32-byte base64url token) before anything looks them up;
//   - approval.rejected reasons are fixed words ([rejectedReason]) plus ids the
//     server issued, never text from the request;
//   - begin and finish are rate limited per client address and per request;
//   - ceremonies nobody finished are deleted once they expire.

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
	// ceremonySweep is how often expired ceremonies are deleted.
	ceremonySweep = time.Minute
)

// validID reports whether s is a request or ceremony id as the server
// issues them: a UUID in its canonical 36-character form.
func validID(s string) bool {
	if len(s) != 36 {
		return false
	}
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

// validToken reports whether s is an enrollment token as CreateEnrollment
// issues them: 32 random bytes, base64url without padding.
func validToken(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == 32 && b64(b) == s
}

// reasons are the words an approval.rejected entry gives for each check.
// They are written here, not formatted from the error, because a CheckError's
// detail may quote what the visitor sent.
var reasons = map[string]string{
	ErrCeremony.Check:             "no unused, unexpired ceremony of this request matched",
	ErrMalformed.Check:            "the response is not a well-formed WebAuthn assertion",
	ErrNotPending.Check:           "the request is no longer pending",
	ErrExpired.Check:              "the request has expired",
	ErrUnknownCredential.Check:    "the credential is not enrolled",
	ErrRevokedCredential.Check:    "the credential was revoked",
	ErrApproverNotAllowed.Check:   "the credential's approver may not decide this request",
	ErrAlreadyCounted.Check:       "the credential's approver was already counted",
	ErrCredentialNotOffered.Check: "the credential was not offered for this ceremony",
	ErrCeremonyType.Check:         "clientData.type is not webauthn.get",
	ErrChallenge.Check:            "the key signed a different action than this request and decision",
	ErrReplay.Check:               "this assertion was already used",
	ErrOrigin.Check:               "the assertion names an origin that is not configured",
	ErrRPID.Check:                 "the authenticator data is not for this RP ID",
	ErrUserPresence.Check:         "the key did not report user presence",
	ErrUserVerification.Check:     "user verification was required and not reported",
	ErrSignature.Check:            "the signature did not verify",
	ErrCounter.Check:              "the sign counter did not increase: possible cloned key",
	ErrNoCredentials.Check:        "nobody allowed has an enrolled key",
	ErrNotBatchable.Check:         "a request of the batch may not be approved in a batch",
	ErrBatchSize.Check:            "the batch is empty, repeats a request or is over approval.max_batch",
}

// rejectedReason is the audit reason for a refusal: the check's name and its
// fixed words. claimed, when not empty, is the server's own description of
// the enrolled credential the response named (see claimedCredential).
func rejectedReason(err error, claimed string) string {
	var ce *CheckError
	if !errors.As(err, &ce) {
		return "refused"
	}
	words, ok := reasons[ce.Check]
	if !ok {
		words = "refused"
	}
	out := ce.Check + ": " + words
	if claimed != "" {
		out += "; " + claimed
	}
	return out
}

// claimedCredential describes the credential an unverified response named,
// in ids the server issued: only an enrolled credential is named, with the
// approver it is enrolled to, as a claim. An approval.rejected entry never
// attributes the attempt to that approver (no approver member): the
// signature did not verify, so anyone could have sent it.
func (s *Service) claimedCredential(ctx context.Context, rawID []byte) string {
	if len(rawID) == 0 || len(rawID) > 1023 {
		return ""
	}
	c, err := s.credential(ctx, s.db, rawID)
	if err != nil || c == nil {
		return ""
	}
	return fmt.Sprintf("claimed credential %s (enrolled to %s), not verified", b64(c.id), c.approverID)
}

// refuse answers a request refused before it reached a handler's logic: it
// logs it (visitor text only as bounded, quoted attributes), labels the
// response for the metrics, and writes the JSON error.
func (s *Service) refuse(w http.ResponseWriter, r *http.Request, status int, check, msg string) {
	s.opts.Logger.Warn("approval page: refused", "check", check, "method", r.Method, "path", bounded(r.URL.Path), "remote", r.RemoteAddr)
	w.Header().Set(RefusedHeader, check)
	writeError(w, status, check, msg)
}

// bounded cuts visitor text for the process log (slog quotes it).
func bounded(s string) string {
	const n = 200
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// requirePathID refuses a request whose {id} (or {token}) path value does
// not have the shape the server issues, before anything looks it up.
func (s *Service) requirePathID(name string, valid func(string) bool, next http.Handler) http.Handler {
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

// sweepCeremonies deletes ceremonies past their expiry, finished or not,
// until the service stops: a begin nobody finishes leaves no row behind for
// longer than ceremonyTTL plus one sweep.
func (s *Service) sweepCeremonies(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(ceremonySweep)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := s.deleteExpiredCeremonies(context.Background()); err != nil {
				s.opts.Logger.Warn("approval: ceremony sweep", "err", err)
			}
		}
	}
}

// deleteExpiredCeremonies removes every ceremony whose expiry has passed.
func (s *Service) deleteExpiredCeremonies(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM approval_ceremonies WHERE expires_at <= ?`, s.now().UnixNano())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
