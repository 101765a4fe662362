package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/pkcs11key"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// softToken makes a SoftHSM token labelled t (PIN 1234) in a directory
// of its own.
func softToken(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte("directories.tokendir = "+dir+"\nobjectstore.backend = file\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv(config.DefaultPINEnv, "1234")
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "t", "--pin", "1234", "--so-pin", "5678").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
}

// A Stack on a token key ends the token's session when it closes: a
// second SoftHSM configuration, read only when the module is initialized
// again, is the one the next Stack of the process uses; and each log,
// signed in its token from the start, verifies with the token's key.
func TestStackReleasesItsTokenKey(t *testing.T) {
	for i := range 2 {
		softToken(t)
		k, err := pkcs11key.Generate(softhsmModule, "t", "1234", "server")
		if err != nil {
			t.Fatalf("stack %d: %v", i, err)
		}
		pub := audit.PublicKeyText(k.Public().(ed25519.PublicKey))
		k.Close()
		c := daemontest.Config(t, func(c *config.Config) {
			c.Audit.PKCS11 = config.AuditPKCS11{Module: softhsmModule, Token: "t", Key: "server", PINEnv: config.DefaultPINEnv}
		})
		s, err := Assemble(context.Background(), c, Options{Logger: daemontest.Logger(t, slog.LevelWarn)})
		if err != nil {
			t.Fatalf("stack %d: %v", i, err)
		}
		var buf bytes.Buffer
		if err := s.Audit().Export(context.Background(), &buf, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := verify.Export(&buf, pub, verify.Options{AllSignatures: true}); err != nil {
			t.Fatalf("stack %d: the export does not verify with the token's key: %v", i, err)
		}
	}
}

// The keys derived from a server key in a token are the same on every
// opening of it (a restart, another replica reaching the same key), differ
// from another key's, and are neither the token key's public key.
func TestKeysDerivedFromATokenKeyAreStable(t *testing.T) {
	softToken(t)
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
