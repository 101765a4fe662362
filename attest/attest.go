// Package attest checks a security key's attestation: the statement an
// authenticator signs when a key is enrolled, saying what kind of
// authenticator made it, with a certificate chain from its maker. An
// operator who trusts only hardware keys names the makers' roots
// (approval.attestation_roots; Yubico publishes its root for YubiKeys), and
// a key whose attestation does not chain to one of them is refused.
//
// The same check runs at enrollment and offline in `audit verify
// --attestation-roots`, on the attestation object and clientDataJSON the
// approver.enrolled entry keeps. go-webauthn verifies the statement itself
// (its format, its signature over the authenticator data and the client
// data hash, the certificate's required fields); the chain to the roots is
// crypto/x509's.
package attest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
)

// ErrNone reports a key that made no attestation (format "none", or a
// self attestation with no certificate), which no root can vouch for.
var ErrNone = errors.New("attest: the key made no attestation a root can vouch for")

// LoadRoots reads PEM files of root certificates.
func LoadRoots(paths []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("attest: %w", err)
		}
		n := 0
		for {
			var b *pem.Block
			if b, data = pem.Decode(data); b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("attest: %s: %w", p, err)
			}
			pool.AddCert(c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("attest: %s holds no PEM certificate", p)
		}
	}
	return pool, nil
}

// Check verifies an attestation object made at enrollment, with the
// clientDataJSON it was made over, and that its certificate chain ends in
// one of roots, with the certificates valid at the time of enrollment (at;
// zero means now), so an old enrollment still checks after its
// certificate expired. It returns the attestation format.
func Check(attestationObject, clientDataJSON []byte, roots *x509.CertPool, at time.Time) (format string, err error) {
	resp := protocol.AuthenticatorAttestationResponse{
		AuthenticatorResponse: protocol.AuthenticatorResponse{ClientDataJSON: clientDataJSON},
		AttestationObject:     attestationObject,
	}
	parsed, err := resp.Parse()
	if err != nil {
		return "", fmt.Errorf("attest: unreadable attestation: %w", err)
	}
	a := parsed.AttestationObject
	if a.Format == "" || a.Format == string(protocol.AttestationFormatNone) {
		return "none", ErrNone
	}
	hash := sha256.Sum256(clientDataJSON)
	if err := a.VerifyAttestation(hash[:], nil, protocol.AttestationPolicy{}, protocol.SignaturePolicy{}); err != nil {
		return a.Format, fmt.Errorf("attest: %s attestation does not verify: %w", a.Format, err)
	}
	x5c, _ := a.AttStatement["x5c"].([]any)
	if len(x5c) == 0 {
		return a.Format, ErrNone
	}
	var chain []*x509.Certificate
	for i, raw := range x5c {
		der, ok := raw.([]byte)
		if !ok {
			return a.Format, fmt.Errorf("attest: x5c[%d] is not a certificate", i)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return a.Format, fmt.Errorf("attest: x5c[%d]: %w", i, err)
		}
		chain = append(chain, c)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: at,
		// Attestation certificates carry no particular key usage.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return a.Format, fmt.Errorf("attest: the attestation certificate (%s) does not chain to a trusted root: %w", chain[0].Subject, err)
	}
	return a.Format, nil
}
