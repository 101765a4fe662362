package daemon

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/countersign/countersign/audit/pkcs11key"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// The keys derived from a server key in a token are the same on every
// opening of it (a restart, another replica reaching the same key), differ
// from another key's, and are neither the token key's public key.
func TestKeysDerivedFromATokenKeyAreStable(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte("directories.tokendir = "+dir+"\nobjectstore.backend = file\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv(config.DefaultPINEnv, "1234")
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "t", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	for _, label := range []string{"a", "b"} {
		k, err := pkcs11key.Generate(softhsmModule, "t", "1234", label)
		if err != nil {
			t.Fatal(err)
		}
		k.Close()
	}
	derive := func(label string) (tok, result []byte) {
		c := daemontest.Config(t, func(c *config.Config) {
			c.Audit.PKCS11 = config.AuditPKCS11{Module: softhsmModule, Token: "t", Key: label, PINEnv: config.DefaultPINEnv}
		})
		signer, err := TokenSigner(c)
		if err != nil {
			t.Fatal(err)
		}
		r, err := resultKey(c)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(signer.JWKS().Keys[0].KeyID), r
	}
	tokA, resA := derive("a")
	tokA2, resA2 := derive("a") // another process, or replica, on the same key
	tokB, resB := derive("b")
	if !bytes.Equal(tokA, tokA2) || !bytes.Equal(resA, resA2) {
		t.Fatal("the keys derived from one token key differ between two openings")
	}
	if bytes.Equal(tokA, tokB) || bytes.Equal(resA, resB) {
		t.Fatal("two token keys derive the same keys")
	}
	if len(resA) != 32 {
		t.Fatalf("result key of %d bytes", len(resA))
	}
}

// A reload may not change audit.pkcs11: the log, the token key and the
// result key are set up from the server key at start.
func TestReloadRefusesAnotherTokenKey(t *testing.T) {
	old := daemontest.Config(t, nil)
	next := *old
	next.Audit.PKCS11 = config.AuditPKCS11{Module: softhsmModule, Token: "t", Key: "k", PINEnv: config.DefaultPINEnv}
	if got := RestartOnly(old, &next); !slices.Contains(got, "audit.pkcs11") {
		t.Fatalf("RestartOnly with a new audit.pkcs11: %v", got)
	}
}
