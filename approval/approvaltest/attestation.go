package approvaltest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Maker is a test authenticator maker: a root CA that issues attestation
// certificates, as Yubico's root does for YubiKeys.
type Maker struct {
	Root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
}

// NewMaker creates a maker with a fresh root.
func NewMaker(t testing.TB, name string) *Maker {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " Root CA", Organization: []string{name}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &Maker{Root: root, rootKey: key}
}

// RootPEM writes the root to a PEM file in dir and returns its path.
func (m *Maker) RootPEM(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Root.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Attest makes k attest its enrollments ("packed" format) with a
// certificate from this maker, shaped as WebAuthn requires of one.
func (m *Maker) Attest(t testing.TB, k *SoftKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject: pkix.Name{Country: []string{"SE"}, Organization: []string{m.Root.Subject.Organization[0]},
			OrganizationalUnit: []string{"Authenticator Attestation"}, CommonName: "Test Key Attestation"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.Root, &key.PublicKey, m.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	k.attKey, k.attCert = key, der
}
