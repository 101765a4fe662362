package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
)

// freePort is a loopback port nobody listened on a moment ago: the page's
// public_url names its port, so it must be known before serve starts.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// `countersign serve` with approval.tls_cert_file and tls_key_file serves
// the approver page over TLS under the name public_url gives it, which is
// what a phone needs: a client that trusts the local CA and resolves the
// name to this machine gets the page (the sign-in page, the page being
// reachable beyond loopback), one that does not trust it gets no page,
// and enrollment links are https links under that name, with a QR code of
// the same link.
func TestServePageOverTLSUnderAName(t *testing.T) {
	const name = "approve.local"
	dir := t.TempDir()
	ca := approvaltest.NewLocalCA(t, dir, name)
	port := freePort(t)
	base := fmt.Sprintf("https://%s:%d", name, port)
	env := append(os.Environ(),
		"COUNTERSIGN_SERVER_DATA_DIR="+filepath.Join(dir, "data"),
		fmt.Sprintf("COUNTERSIGN_APPROVAL_LISTEN=127.0.0.1:%d", port),
		"COUNTERSIGN_APPROVAL_PUBLIC_URL="+base,
		"COUNTERSIGN_APPROVAL_TLS_CERT_FILE="+ca.CertFile,
		"COUNTERSIGN_APPROVAL_TLS_KEY_FILE="+ca.KeyFile,
	)
	cmd := exec.Command(binPath, "serve", "--http", "127.0.0.1:0")
	cmd.Dir, cmd.Env = repoRoot, env
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "serving MCP over HTTP"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server did not start:\n%s", stderr.String())
		}
	}
	if want := "url=" + base; !strings.Contains(stderr.String(), want) {
		t.Errorf("the log does not give the page as %s:\n%s", base, stderr.String())
	}

	// The name resolves to the listener, as /etc/hosts or the LAN's DNS
	// would make it; TLS checks the certificate against the name.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
	}
	client := func(roots *x509.CertPool) *http.Client {
		return &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: roots}}}
	}
	get := func(c *http.Client, url string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	phone := client(ca.Pool)
	resp, _ := get(phone, base+"/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
		t.Errorf("GET / over TLS: %d to %q, want 303 to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !resp.TLS.PeerCertificates[0].Equal(ca.Leaf) {
		t.Error("the page did not present the certificate of tls_cert_file")
	}
	if resp, body := get(phone, base+"/signin"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>Sign in</h1>") {
		t.Errorf("sign-in page over TLS: %d %.300s", resp.StatusCode, body)
	}

	var unknown *tls.CertificateVerificationError
	if _, err := client(nil).Get(base + "/signin"); !errors.As(err, &unknown) {
		t.Errorf("a client that does not trust the local CA: %v, want a certificate verification error", err)
	}

	enroll := exec.Command(binPath, "approvers", "enroll", "alice")
	enroll.Dir, enroll.Env = repoRoot, env
	out, err := enroll.Output()
	if err != nil {
		t.Fatalf("approvers enroll: %v\n%s", err, out)
	}
	link := strings.Fields(string(out))[0]
	if !strings.HasPrefix(link, base+"/enroll/") {
		t.Fatalf("enrollment link %q is not under %s", link, base)
	}
	resp, body := get(phone, link)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="qr-url">`+link+`<`) || !strings.Contains(body, `aria-label="QR code of `+link+`"`) {
		t.Errorf("enrollment page over TLS: %d, QR code of %s not found in %.2000s", resp.StatusCode, link, body)
	}
	if strings.Contains(body, "a phone cannot reach") {
		t.Error("the enrollment page says a phone cannot reach a link under a real name")
	}
}
