package config

import (
	"os"
	"path/filepath"
)

// AuditPKCS11 puts the server key in a PKCS #11 token (an HSM, SoftHSM)
// instead of a file: the server asks the token to sign and never holds
// the private key. Set (Module not empty) it replaces audit.key_file.
//
// The token's PIN is never in this file: configuration files are copied,
// printed (config print), diffed and kept in version control, and a PIN
// there would unlock the key for anyone who reads one. PINEnv names the
// environment variable that holds it (a systemd credential, a secret the
// container runtime injects).
//
// It changes only with a restart, like every key: the log, the approval
// token key and the sealed results' key are set up from it at start.
type AuditPKCS11 struct {
	Module string `mapstructure:"module"`  // the token's PKCS #11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
	Token  string `mapstructure:"token"`   // the token's label
	Key    string `mapstructure:"key"`     // the Ed25519 key pair's label (CKA_LABEL)
	PINEnv string `mapstructure:"pin_env"` // the environment variable holding the user PIN
}

// DefaultPINEnv is audit.pkcs11.pin_env when the file does not set it.
const DefaultPINEnv = "COUNTERSIGN_PKCS11_PIN"

// Enabled reports whether the server key is in a token.
func (p AuditPKCS11) Enabled() bool { return p.Module != "" }

// PIN is the token's PIN from the environment variable PINEnv names.
func (p AuditPKCS11) PIN() (string, bool) { return os.LookupEnv(p.PINEnv) }

func (c *Config) validatePKCS11(v *validator) {
	p := c.Audit.PKCS11
	if !p.Enabled() {
		if p.Token != "" || p.Key != "" {
			v.fail("audit.pkcs11.module", "audit.pkcs11 names a token or key but no module (the token's PKCS #11 library)")
		}
		return
	}
	if c.Audit.KeyFile != "" {
		v.fail("audit.pkcs11", "audit.key_file and audit.pkcs11 both name the server key: keep one (audit rotate-key --to-pkcs11 hands the log from the file key to the token's)")
	}
	if !filepath.IsAbs(p.Module) {
		v.fail("audit.pkcs11.module", "%s is not an absolute path: the loader would search for it", p.Module)
	} else if fi, err := os.Stat(p.Module); err != nil {
		v.fail("audit.pkcs11.module", "%v", err)
	} else if fi.IsDir() {
		v.fail("audit.pkcs11.module", "%s is a directory, not a PKCS #11 library", p.Module)
	}
	v.nonEmpty("audit.pkcs11.token", p.Token)
	v.nonEmpty("audit.pkcs11.key", p.Key)
	v.nonEmpty("audit.pkcs11.pin_env", p.PINEnv)
}
