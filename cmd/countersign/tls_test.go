package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// localCA is a certificate authority made for one test, as README's "Approve
// from a phone" makes one with openssl, and the page's certificate it signs.
type localCA struct {
	pool              *x509.CertPool
	leaf              *x509.Certificate
	certFile, keyFile string
}

func newLocalCA(t *testing.T, dir, name string) *localCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Countersign local CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &localCA{pool: x509.NewCertPool(), leaf: leaf, certFile: filepath.Join(dir, name+".crt"), keyFile: filepath.Join(dir, name+".key")}
	c.pool.AddCert(ca)
	if err := os.WriteFile(c.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

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
	ca := newLocalCA(t, dir, name)
	port := freePort(t)
	base := fmt.Sprintf("https://%s:%d", name, port)
	env := append(os.Environ(),
		"COUNTERSIGN_SERVER_DATA_DIR="+filepath.Join(dir, "data"),
		fmt.Sprintf("COUNTERSIGN_APPROVAL_LISTEN=127.0.0.1:%d", port),
		"COUNTERSIGN_APPROVAL_PUBLIC_URL="+base,
		"COUNTERSIGN_APPROVAL_TLS_CERT_FILE="+ca.certFile,
		"COUNTERSIGN_APPROVAL_TLS_KEY_FILE="+ca.keyFile,
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

	phone := client(ca.pool)
	resp, _ := get(phone, base+"/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin" {
		t.Errorf("GET / over TLS: %d to %q, want 303 to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !resp.TLS.PeerCertificates[0].Equal(ca.leaf) {
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
