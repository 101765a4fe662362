package attest_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/attest"
)

// enroll has key answer a registration and returns its attestation object
// and clientDataJSON.
func enroll(t *testing.T, key *approvaltest.SoftKey) (att, cd []byte) {
	t.Helper()
	opts := `{"challenge":"` + base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")) +
		`","user":{"id":"` + base64.RawURLEncoding.EncodeToString([]byte("alice")) + `"}}`
	raw := key.Create(t, json.RawMessage(opts))
	var cred struct {
		Response struct{ ClientDataJSON, AttestationObject string }
	}
	if err := json.Unmarshal(raw, &cred); err != nil {
		t.Fatal(err)
	}
	att, _ = base64.RawURLEncoding.DecodeString(cred.Response.AttestationObject)
	cd, _ = base64.RawURLEncoding.DecodeString(cred.Response.ClientDataJSON)
	return att, cd
}

func TestAttestationChainsToTheMakersRootOnly(t *testing.T) {
	yubi, other := approvaltest.NewMaker(t, "Yubi Test"), approvaltest.NewMaker(t, "Other")
	roots, err := attest.LoadRoots([]string{yubi.RootPEM(t, t.TempDir())})
	if err != nil {
		t.Fatal(err)
	}
	genuine := approvaltest.NewSoftKey(t, "localhost", "http://localhost:8710")
	yubi.Attest(t, genuine)
	att, cd := enroll(t, genuine)
	if format, err := attest.Check(att, cd, roots, time.Time{}); err != nil || format != "packed" {
		t.Fatalf("genuine key: %s %v", format, err)
	}

	foreign := approvaltest.NewSoftKey(t, "localhost", "http://localhost:8710")
	other.Attest(t, foreign)
	att2, cd2 := enroll(t, foreign)
	if _, err := attest.Check(att2, cd2, roots, time.Time{}); err == nil || !strings.Contains(err.Error(), "does not chain to a trusted root") {
		t.Errorf("another maker's key: %v", err)
	}

	software := approvaltest.NewSoftKey(t, "localhost", "http://localhost:8710")
	att3, cd3 := enroll(t, software)
	if _, err := attest.Check(att3, cd3, roots, time.Time{}); !errors.Is(err, attest.ErrNone) {
		t.Errorf("a key with no attestation: %v", err)
	}

	// The statement is bound to the client data it was made over.
	other3 := append([]byte{}, cd...)
	other3[len(other3)-2] ^= 1
	if _, err := attest.Check(att, other3, roots, time.Time{}); err == nil {
		t.Error("an attestation moved onto other client data verified")
	}
	// After the certificates expired, an old enrollment still checks at
	// its own time, and not at a time after the expiry.
	if _, err := attest.Check(att, cd, roots, time.Now().Add(48*time.Hour)); err == nil {
		t.Error("an attestation checked after its certificate expired verified")
	}
}

func TestLoadRootsRefusesFilesWithoutCertificates(t *testing.T) {
	if _, err := attest.LoadRoots([]string{"/no/such/root.pem"}); err == nil {
		t.Error("a missing file loaded")
	}
}
