package main

import (
	"net"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
)

// healthcheck finds a running server from the same configuration serve
// read (here, COUNTERSIGN_APPROVAL_LISTEN), and fails, saying why, when
// nothing answers there.
func TestHealthcheck(t *testing.T) {
	n := newNewcomer(t)
	_, page := n.listening(t, n.cwd, n.env())
	port := page[strings.LastIndex(page, ":")+1:]
	n.listen = "0.0.0.0:" + port // as the container image sets it: asked on loopback
	out, errOut, code := n.run(t, n.cwd, n.env("COUNTERSIGN_APPROVAL_INSECURE_NO_TLS=true"), "healthcheck")
	if code != 0 || out != "http://127.0.0.1:"+port+"/healthz: ok\n" {
		t.Fatalf("healthcheck of a running server: exit %d %q %s", code, out, errOut)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	out, errOut, code = n.run(t, n.cwd, n.env(), "healthcheck", "--url", "http://"+closed+"/healthz")
	if code != 1 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("healthcheck of nothing: exit %d %q %q", code, out, errOut)
	}
	out, errOut, code = n.run(t, n.cwd, n.env(), "healthcheck", "--url", page+"/no-such-page")
	if code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("healthcheck of a page that is not there: exit %d %q %q", code, out, errOut)
	}
}

func TestHealthzURL(t *testing.T) {
	for _, tc := range []struct {
		listen, cert, want string
	}{
		{"127.0.0.1:8710", "", "http://127.0.0.1:8710/healthz"},
		{"0.0.0.0:8710", "", "http://127.0.0.1:8710/healthz"},
		{":8710", "", "http://127.0.0.1:8710/healthz"},
		{"[::]:8710", "", "http://[::1]:8710/healthz"},
		{"[::1]:8710", "", "http://[::1]:8710/healthz"},
		{"approve.example.com:443", "/etc/countersign/tls.crt", "https://approve.example.com:443/healthz"},
		{"0.0.0.0:8443", "tls.crt", "https://127.0.0.1:8443/healthz"},
	} {
		got, err := healthzURL(config.Approval{Listen: tc.listen, TLSCertFile: tc.cert})
		if err != nil || got != tc.want {
			t.Errorf("%s (cert %q): %q, %v; want %q", tc.listen, tc.cert, got, err, tc.want)
		}
	}
	if _, err := healthzURL(config.Approval{Listen: "8710"}); err == nil || !strings.Contains(err.Error(), "approval.listen") {
		t.Errorf("a listen without a port: %v", err)
	}
}
