package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// withHeaders adds the configured headers to every request to an upstream,
// and sends nothing to any other origin: the headers are the upstream's
// credentials, and an upstream could otherwise hand them to another host by
// a redirect or, over SSE, by naming another host as its message endpoint.
type withHeaders struct {
	upstream string // its name, for errors
	origin   string // scheme://host:port of the configured URL
	headers  http.Header
	next     http.RoundTripper

	// refused is the last cross-origin refusal. A client library may report
	// the connection it tore down after the refusal instead of the refusal
	// itself (go-sdk's SSE transport does, depending on timing), and the
	// operator must learn which origin the upstream tried to reach.
	refused atomic.Pointer[error]
}

func newWithHeaders(upstream, rawURL string, headers http.Header, next http.RoundTripper) (*withHeaders, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: url: %w", upstream, err)
	}
	return &withHeaders{upstream: upstream, origin: origin(u), headers: headers, next: next}, nil
}

// origin is u's scheme, host and port, the port made explicit, so that
// http://h and http://h:80 are one origin and https://h another.
func origin(u *url.URL) string {
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// crossOriginError refuses a request to another origin than the upstream's.
func (t *withHeaders) crossOriginError(how string, u *url.URL) error {
	err := fmt.Errorf("upstream %s: refusing %s %s: it is not the upstream's origin %s, and the upstream's configured headers are never sent elsewhere", t.upstream, how, origin(u), t.origin)
	t.refused.Store(&err)
	return err
}

// explain adds to err the cross-origin refusal made since the last call,
// when err does not already carry it.
func (t *withHeaders) explain(err error) error {
	p := t.refused.Swap(nil)
	if err == nil || p == nil || errors.Is(err, *p) || strings.Contains(err.Error(), (*p).Error()) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, *p)
}

// checkRedirect lets a redirect within the upstream's origin through, and
// refuses one to another origin, naming it.
func (t *withHeaders) checkRedirect(r *http.Request, via []*http.Request) error {
	if origin(r.URL) != t.origin {
		return t.crossOriginError("the redirect to", r.URL)
	}
	if len(via) >= 10 {
		return fmt.Errorf("upstream %s: stopped after 10 redirects", t.upstream)
	}
	return nil
}

func (t *withHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	if origin(r.URL) != t.origin {
		return nil, t.crossOriginError("a request to", r.URL)
	}
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header[k] = v
	}
	return t.next.RoundTrip(r)
}
