package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	jwxjwk "github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store/storetest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// softToken makes a SoftHSM token labelled countersign (user PIN 1234) in
// a temporary directory of its own, for the test and the processes it
// starts (SOFTHSM2_CONF, COUNTERSIGN_PKCS11_PIN).
func softToken(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(softhsmModule); err != nil {
		t.Fatalf("SoftHSM is not installed (%v): scripts/deps.sh installs softhsm2", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+dir+"\nobjectstore.backend = file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv(config.DefaultPINEnv, "1234")
	softhsm(t, "--init-token", "--free", "--label", "countersign", "--pin", "1234", "--so-pin", "5678")
}

func softhsm(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("softhsm2-util", args...).CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util %v: %v\n%s", args, err, out)
	}
}

// tokenKey is audit.pkcs11 for key label in softToken's token.
func tokenKey(label string) config.AuditPKCS11 {
	return config.AuditPKCS11{Module: softhsmModule, Token: "countersign", Key: label, PINEnv: config.DefaultPINEnv}
}

// useKey rewrites the site's configuration file with audit.pkcs11 p.
func (s *site) useKey(p config.AuditPKCS11) {
	s.t.Helper()
	s.cfg.Audit.PKCS11 = p
	raw, err := config.Encode(s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(s.path, raw, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// fails runs a countersign command on the site that must fail, and
// returns its stderr.
func (s *site) fails(env []string, args ...string) string {
	s.t.Helper()
	cmd := exec.Command(binPath, append(args, "--config", s.path)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		s.t.Fatalf("countersign %v succeeded:\n%s", args, out)
	}
	return string(out)
}

// tokenRotationSQLiteOnly is why the SoftHSM tests skip the PostgreSQL pass.
const tokenRotationSQLiteOnly = "audit rotate-key --to-token works on a SQLite data directory only so far (README, The server key in a PKCS #11 token)"

// A data directory's log rotated from its file key to a key generated in
// SoftHSM, then served: the log, the approval tokens (verified against
// /.well-known/jwks.json) and the sealed result of an approved call (read
// again after a restart) all work through the token, and the export
// verifies from the first, file key.
func TestServeWithTheServerKeyInSoftHSM(t *testing.T) {
	storetest.SQLiteOnly(t, tokenRotationSQLiteOnly)
	softToken(t)
	sum := sha256.Sum256([]byte(cibaClientToken))
	s := newSite(t, func(c *config.Config) {
		c.HTTP.Agents = []config.Agent{{ID: "ci-bot", TokenSHA256: hex.EncodeToString(sum[:])}}
		pollModeFor("transfer")(c)
	})
	s.bin = binPath
	first := strings.TrimSpace(s.cli("audit", "pubkey"))
	tokenPub := strings.TrimSpace(s.cli("audit", "rotate-key", "--reason", "moved to an HSM",
		"--to-module", softhsmModule, "--to-token", "countersign", "--to-key", "server", "--generate"))
	if tokenPub == first || !strings.HasPrefix(tokenPub, "countersign+") {
		t.Fatalf("rotated from %s to %s", first, tokenPub)
	}
	s.useKey(tokenKey("server"))
	s.cli("config", "validate")
	if got := strings.TrimSpace(s.cli("audit", "pubkey")); got != tokenPub {
		t.Fatalf("audit pubkey %s, want the token's %s", got, tokenPub)
	}

	n := s.start()
	base := func(n *node) string { u, _ := url.Parse(n.mcp); return u.Scheme + "://" + u.Host }
	details := `[{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"99.00"},"creditorName":"Acme Supplies","debtorAccount":{"id":"operating"}}]`
	r := n.postCIBA(t, ciba.PathAuthorize, url.Values{"scope": {"openid"}, "login_hint": {"alice"}, "authorization_details": {details}})
	cibaID, _ := r["auth_req_id"].(string)
	if cibaID == "" {
		t.Fatalf("bc-authorize: %v", r)
	}
	n.decide(cibaID, "approve")
	r = n.postCIBA(t, ciba.PathToken, url.Values{"grant_type": {ciba.GrantType}, "auth_req_id": {cibaID}})
	tok, _ := r["approval_token"].(string)
	if tok == "" {
		t.Fatalf("token: %v", r)
	}
	jwks := get(t, base(n)+ciba.PathJWKS)
	set, err := jwxjwk.Parse(jwks)
	if err != nil {
		t.Fatal(err)
	}
	// The token key derived from the token's key, and the file key's for
	// the tokens it signed before the rotation.
	if set.Len() != 2 {
		t.Errorf("key set after the rotation has %d keys, want 2:\n%s", set.Len(), jwks)
	}
	if _, err := jwxjwt.Parse([]byte(tok), jwxjwt.WithKeySet(set), jwxjwt.WithAudience("ci-bot")); err != nil {
		t.Fatalf("approval token against %s: %v", ciba.PathJWKS, err)
	}

	agent := func(n *node) *sdk.ClientSession {
		return connect(t, &sdk.StreamableClientTransport{Endpoint: n.mcp, MaxRetries: -1,
			HTTPClient: &http.Client{Transport: bearer{cibaClientToken, http.DefaultTransport}}}, protocolVersions[0], nil)
	}
	id := pending(t, agent(n), "transfer", bigTransfer)
	n.decide(id, "approve")
	done := pollUntil(t, agent(n), id, "executed")
	n.term()

	// The sealed result opens after a restart: its key derives from the
	// token's deterministic signature, the same on every start.
	n = s.start()
	if again := status(t, agent(n), id); again["status"] != "executed" || done["result"] == nil || fmt.Sprint(again["result"]) != fmt.Sprint(done["result"]) {
		t.Fatalf("after a restart approval_status says %v, want %v", again, done)
	}
	jwks2 := get(t, base(n)+ciba.PathJWKS)
	if set2, _ := jwxjwk.Parse(jwks2); set2 == nil || set2.Len() != 2 {
		t.Errorf("key set after a restart:\n%s", jwks2)
	} else if _, err := jwxjwt.Parse([]byte(tok), jwxjwt.WithKeySet(set2), jwxjwt.WithAudience("ci-bot")); err != nil {
		t.Errorf("the approval token no longer verifies after a restart: %v", err)
	}
	n.term()

	export := filepath.Join(t.TempDir(), "log.jsonl")
	s.cli("audit", "export", "--out", export)
	if out := s.cli("audit", "verify", export, "--key", first); !strings.HasPrefix(out, "OK:") {
		t.Fatalf("verify from the file key: %s", out)
	}
	if err := exec.Command(binPath, "audit", "verify", export, "--key", tokenPub).Run(); err == nil {
		t.Error("the export verified from the token's key, which did not sign its beginning")
	}
}

// What config validate and serve refuse of audit.pkcs11, each with the
// reason; and a rotation from one token key to another.
func TestTokenKeyRefusalsAndATokenToTokenRotation(t *testing.T) {
	storetest.SQLiteOnly(t, tokenRotationSQLiteOnly)
	softToken(t)
	s := newSite(t, nil)
	s.bin = binPath
	first := strings.TrimSpace(s.cli("audit", "pubkey"))
	s.cli("audit", "rotate-key", "--to-module", softhsmModule, "--to-token", "countersign", "--to-key", "server", "--generate")
	if out := s.fails(nil, "audit", "rotate-key", "--to-module", softhsmModule, "--to-token", "countersign", "--to-key", "server", "--generate"); !strings.Contains(out, `holds a key labelled "server" already`) {
		t.Errorf("generating over an existing label: %s", out)
	}

	// An RSA key in the token, to be refused by type.
	pem := filepath.Join(t.TempDir(), "rsa.pem")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	softhsm(t, "--import", pem, "--token", "countersign", "--label", "rsa", "--id", "0a", "--pin", "1234")

	for _, c := range []struct {
		name string
		key  config.AuditPKCS11
		file string
		want string
	}{
		{"module missing", config.AuditPKCS11{Module: "/nonexistent/libpkcs11.so", Token: "countersign", Key: "server", PINEnv: config.DefaultPINEnv}, "", "audit.pkcs11.module"},
		{"token not found", config.AuditPKCS11{Module: softhsmModule, Token: "elsewhere", Key: "server", PINEnv: config.DefaultPINEnv}, "", `no such token labelled "elsewhere"`},
		{"key not found", tokenKey("nobody"), "", `no private key labelled "nobody"`},
		{"wrong key type", tokenKey("rsa"), "", `key "rsa" is not an Ed25519 key`},
		{"both key_file and pkcs11", tokenKey("server"), filepath.Join(s.cfg.Server.DataDir, "server.key"), "audit.key_file and audit.pkcs11 both name the server key"},
	} {
		s.cfg.Audit.KeyFile = c.file
		s.useKey(c.key)
		if out := s.fails(nil, "config", "validate"); !strings.Contains(out, c.want) {
			t.Errorf("%s: config validate says\n%s\nwant %q", c.name, out, c.want)
		}
	}
	s.cfg.Audit.KeyFile = ""
	s.useKey(tokenKey("server"))
	s.cli("config", "validate")
	if out := s.cli("config", "print"); !strings.Contains(out, "pin_env: "+config.DefaultPINEnv) || strings.Contains(out, "1234") {
		t.Errorf("config print shows the PIN or not its variable:\n%s", out)
	}
	if out := s.fails([]string{config.DefaultPINEnv + "=0000"}, "serve", "--http", "127.0.0.1:0"); !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Errorf("serve with a wrong PIN:\n%s", out)
	}
	if out := s.fails([]string{config.DefaultPINEnv + "="}, "serve", "--http", "127.0.0.1:0"); !strings.Contains(out, "$"+config.DefaultPINEnv+" (audit.pkcs11.pin_env), which is not set") {
		t.Errorf("serve without a PIN:\n%s", out)
	}

	// From one token key to another: the log follows, and the key set
	// keeps the token keys of both retired keys for their tokens' lifetime.
	second := strings.TrimSpace(s.cli("audit", "rotate-key", "--to-token", "countersign", "--to-key", "second", "--generate", "--reason", "yearly"))
	s.useKey(tokenKey("second"))
	if got := strings.TrimSpace(s.cli("audit", "pubkey")); got != second {
		t.Fatalf("audit pubkey %s after rotating to %s", got, second)
	}
	if n := strings.Count(s.cli("token", "jwks"), `"kid"`); n != 3 {
		t.Errorf("token jwks after two rotations lists %d keys, want 3", n)
	}
	export := filepath.Join(t.TempDir(), "log.jsonl")
	s.cli("audit", "export", "--out", export)
	body, _ := os.ReadFile(export)
	if n := strings.Count(string(body), `"kind":"key.rotated"`); n != 2 {
		t.Fatalf("export has %d key.rotated entries, want 2", n)
	}
	if out := s.cli("audit", "verify", export, "--key", first); !strings.HasPrefix(out, "OK:") {
		t.Fatalf("verify from the file key: %s", out)
	}
}

// The token removed under a running server: appends fail closed (the call
// is refused, nothing runs unrecorded) and /readyz says why.
func TestTokenRemovedFailsClosed(t *testing.T) {
	storetest.SQLiteOnly(t, tokenRotationSQLiteOnly)
	softToken(t)
	s := newSite(t, nil)
	s.bin = binPath
	s.cli("audit", "rotate-key", "--to-module", softhsmModule, "--to-token", "countersign", "--to-key", "server", "--generate")
	s.useKey(tokenKey("server"))
	n := s.start()
	cs := n.agent()
	checkBalance(t, cs)
	softhsm(t, "--delete-token", "--token", "countersign")
	res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "get_balance", Arguments: map[string]any{"account": "operating"}})
	if err == nil && !res.IsError {
		t.Fatalf("a call ran with the server key's token removed: %+v", res)
	}
	u, _ := url.Parse(n.mcp)
	resp, err := http.Get(u.Scheme + "://" + u.Host + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "FAIL  audit") {
		t.Fatalf("/readyz with the token removed: %d\n%s", resp.StatusCode, body)
	}
	t.Logf("/readyz:\n%s", body)
}
