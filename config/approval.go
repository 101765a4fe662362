package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// derivedFields records which approval settings were derived from listen
// rather than written, so that they follow listen when it changes (an
// environment override, or the port a listen on :0 was given) while
// settings someone wrote are only ever checked.
type derivedFields struct{ publicURL, rpID, origins, allowedHosts bool }

// Derive fills the approval settings left empty from listen, the address
// the page listens on (a host:port; pass the bound address after listening
// on port 0), and refreshes the ones it derived before:
//
//   - public_url: http://localhost:PORT for a loopback or unspecified host
//     (WebAuthn refuses IP addresses, and a browser treats localhost as a
//     secure context over plain HTTP), http://NAME:PORT for a host name;
//     https when tls_cert_file is set. A non-loopback IP address has no
//     name to derive: public_url must then be set.
//   - rp_id: public_url's host name.
//   - origins: public_url's origin.
//   - allowed_hosts: public_url's host:port, and when that is on this
//     machine's loopback, localhost:PORT and 127.0.0.1:PORT as well.
//
// It reports a problem only when public_url cannot be derived from a
// well-formed listen; a malformed one leaves the four empty.
func (a *Approval) Derive(listen string) error {
	if a.derived.publicURL || a.PublicURL == "" {
		a.derived.publicURL = true
		a.PublicURL = ""
		u, err := publicURLFor(listen, a.TLSCertFile != "")
		if err != nil {
			return err
		}
		a.PublicURL = u
	}
	pub, err := url.Parse(a.PublicURL)
	if err != nil || pub.Host == "" {
		return nil // validate says what is wrong with it
	}
	if a.derived.rpID || a.RPID == "" {
		a.derived.rpID = true
		a.RPID = pub.Hostname()
	}
	if a.derived.origins || len(a.Origins) == 0 {
		a.derived.origins = true
		a.Origins = []string{pub.Scheme + "://" + pub.Host}
	}
	if a.derived.allowedHosts || len(a.AllowedHosts) == 0 {
		a.derived.allowedHosts = true
		a.AllowedHosts = []string{pub.Host}
		if _, port, err := net.SplitHostPort(listen); err == nil && isLoopbackHost(pub.Hostname()) {
			for _, h := range []string{"localhost:" + port, "127.0.0.1:" + port} {
				if !slices.Contains(a.AllowedHosts, h) {
					a.AllowedHosts = append(a.AllowedHosts, h)
				}
			}
		}
	}
	return nil
}

// Derived reports whether public_url was derived from listen, so that a
// listener on port 0 knows to call Derive again with its real port.
func (a *Approval) Derived() bool { return a.derived.publicURL }

func publicURLFor(listen string, tls bool) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return "", nil // validate says listen is wrong; nothing follows from it
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	switch {
	case isLoopbackHost(host) || isUnspecified(host):
		host = "localhost"
	case net.ParseIP(host) != nil:
		return "", fmt.Errorf("required when listen is the IP address %s: WebAuthn needs a name, e.g. https://approve.example.com (set rp_id to match)", host)
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// checkApproval refuses approval settings that contradict each other, each
// of which would leave a page that refuses every approval (403, or a
// WebAuthn error in the browser) or a link that points nowhere.
func (c *Config) checkApproval(v *validator) {
	a := &c.Approval
	pub, err := url.Parse(a.PublicURL)
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return // v.url has said so
	}
	if (pub.Path != "" && pub.Path != "/") || pub.RawQuery != "" || pub.Fragment != "" {
		v.fail("approval.public_url", "expected a URL with no path, query or fragment (the page serves at its root), got %q", a.PublicURL)
	}
	a.checkTransport(v, pub)
	a.checkListenReaches(v, pub)
	a.checkOriginAndHost(v, pub)
	a.checkRPID(v, pub.Hostname())
}

// checkTransport refuses a page that browsers would not run WebAuthn on, or
// that is reachable from beyond this machine without TLS.
func (a *Approval) checkTransport(v *validator, pub *url.URL) {
	lhost, _, lerr := net.SplitHostPort(a.Listen)
	if pub.Scheme == "http" && !isLoopbackHost(pub.Hostname()) {
		v.fail("approval.public_url", "%s is plain http on a host other than localhost: browsers allow WebAuthn there only over https (set tls_cert_file and tls_key_file, or put an https proxy in front)", a.PublicURL)
	}
	if lerr == nil && !isLoopbackHost(lhost) && a.TLSCertFile == "" && !a.InsecureNoTLS {
		v.fail("approval.listen", "%s is reachable from beyond this machine, but the page has no TLS: set tls_cert_file and tls_key_file "+
			"(approvers then sign in with their key), or, with an https proxy in front, approval.insecure_no_tls: true", a.Listen)
	}
	if pub.Scheme == "http" && a.TLSCertFile != "" {
		v.fail("approval.public_url", "%s is http, but tls_cert_file makes the page serve https", a.PublicURL)
	}
}

// checkListenReaches refuses a public_url on this machine's loopback that
// the listen address would not answer: another interface, or another port.
func (a *Approval) checkListenReaches(v *validator, pub *url.URL) {
	lhost, lport, lerr := net.SplitHostPort(a.Listen)
	if lerr != nil || !isLoopbackHost(pub.Hostname()) {
		return
	}
	if !isLoopbackHost(lhost) && !isUnspecified(lhost) {
		v.fail("approval.public_url", "%s is on this machine's loopback, but approval.listen is %s: nothing would answer there", a.PublicURL, a.Listen)
		return
	}
	if portOf(pub) != lport && lport != "0" {
		v.fail("approval.public_url", "%s points at port %s, but approval.listen is %s: the link would reach nothing (leave public_url, origins and allowed_hosts unset to derive them from listen)",
			a.PublicURL, portOf(pub), a.Listen)
	}
}

// checkOriginAndHost refuses origins and allowed_hosts lists that leave
// out public_url's own.
func (a *Approval) checkOriginAndHost(v *validator, pub *url.URL) {
	if origin := pub.Scheme + "://" + pub.Host; len(a.Origins) > 0 && !slices.Contains(a.Origins, origin) {
		v.fail("approval.origins", "does not include %s, the origin of public_url: the page would refuse every approval made from it", origin)
	}
	if len(a.AllowedHosts) > 0 && !slices.ContainsFunc(a.AllowedHosts, func(h string) bool { return strings.EqualFold(h, pub.Host) }) {
		v.fail("approval.allowed_hosts", "does not include %s, the host of public_url: the page would answer 403 to everyone who follows its links", pub.Host)
	}
}

// checkRPID refuses an rp_id that an origin's host or public_url's host
// (host) is neither equal to nor a subdomain of: WebAuthn would refuse
// every key there. An rp_id that is an IP address is not checked here.
func (a *Approval) checkRPID(v *validator, host string) {
	if a.RPID == "" || net.ParseIP(a.RPID) != nil {
		return
	}
	for i, o := range a.Origins {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" {
			continue // v.url has said so
		}
		if h := u.Hostname(); !withinRPID(h, a.RPID) {
			v.fail(fmt.Sprintf("approval.origins[%d]", i), "host %s is not %s or a subdomain of it (approval.rp_id): WebAuthn would refuse every key there", h, a.RPID)
		}
	}
	if !withinRPID(host, a.RPID) {
		v.fail("approval.rp_id", "%s is not public_url's host %s nor a parent domain of it: WebAuthn would refuse every key", a.RPID, host)
	}
}

func withinRPID(host, rpID string) bool {
	host, rpID = strings.ToLower(host), strings.ToLower(rpID)
	return host == rpID || strings.HasSuffix(host, "."+rpID)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// Remote reports whether the page may be reached from beyond this machine:
// it listens on other than loopback, or its public_url names another host
// (a proxy in front). Approvers must then sign in with their key before the
// page shows anything (page.Options.RequireSignIn).
func (a *Approval) Remote() bool {
	if host, _, err := net.SplitHostPort(a.Listen); err != nil || !isLoopbackHost(host) {
		return true
	}
	if pub, err := url.Parse(a.PublicURL); err == nil && pub.Host != "" && !isLoopbackHost(pub.Hostname()) {
		return true
	}
	return false
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func isUnspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsUnspecified()
}

// MaxBatchLimit is the largest approval.max_batch: every request of a
// batch is shown in full before the one tap, and past a few dozen nobody
// reads them.
const MaxBatchLimit = 50
