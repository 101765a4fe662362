package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign"
)

func TestEmbeddedDefaultValidates(t *testing.T) {
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != Embedded {
		t.Errorf("Source = %q", c.Source)
	}
	if _, ok := c.Tools["transfer"]; !ok {
		t.Error("default config has no transfer tool")
	}
	if got := c.Tools["transfer"].Rules[1].Quorum; got != 2 {
		t.Errorf("transfer critical quorum = %d, want 2", got)
	}
	if c.Approval.Timeout != 5*time.Minute {
		t.Errorf("approval.timeout = %v", c.Approval.Timeout)
	}
}

// minimal is the smallest config that validates; cases below break it.
const minimal = `
tools:
  get_balance:
    level: low
ledger:
  accounts:
    - {id: main, currency: USD, balance: "10.00"}
`

func TestMinimalConfigGetsDefaults(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.DataDir != filepath.Join(state, "countersign") || c.HTTP.MaxBodyBytes != 1<<20 || c.Server.StdioAgent != "stdio" {
		t.Errorf("defaults not applied: %+v", c.Server)
	}
	a := c.Approval
	if a.PublicURL != "http://localhost:8710" || a.RPID != "localhost" ||
		strings.Join(a.Origins, " ") != "http://localhost:8710" ||
		strings.Join(a.AllowedHosts, " ") != "localhost:8710 127.0.0.1:8710" {
		t.Errorf("approval settings not derived from listen: %+v", a)
	}
}

func TestDefaultDataDirIsTheStateDirectory(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, tc := range []struct{ xdg, want string }{
		{"/var/state", "/var/state/countersign"},
		{"", filepath.Join(home, ".local", "state", "countersign")},
		{"relative/state", filepath.Join(home, ".local", "state", "countersign")}, // invalid per XDG: ignored
	} {
		t.Setenv("XDG_STATE_HOME", tc.xdg)
		if got, err := DefaultDataDir(); err != nil || got != tc.want {
			t.Errorf("XDG_STATE_HOME=%q: %q, %v; want %q", tc.xdg, got, err, tc.want)
		}
	}
}

func TestBadConfigNamesFileAndKeyPath(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // each must appear in the error
	}{
		{"bad yaml", "tools: [\n  get_balance", []string{"bad.yaml: not valid YAML"}},
		{"unknown top-level key", minimal + "bogus: 1\n", []string{"bad.yaml: bogus: unknown key"}},
		{"unknown nested key", minimal + "server:\n  workerz: 3\n", []string{"bad.yaml: server.workerz: unknown key", "workers"}},
		{"unknown rule key", "tools:\n  transfer:\n    level: low\n    rules:\n      - when: 'true'\n        levle: high\n" + "ledger:\n  accounts: [{id: a, currency: USD, balance: '1'}]\n",
			[]string{"tools.transfer.rules[0].levle: unknown key"}},
		{"wrong type int", minimal + "server:\n  workers: many\n", []string{"server.workers: expected an integer, got string \"many\""}},
		{"wrong type list", minimal + "approvers: 5\n", []string{"approvers: expected a list, got number 5"}},
		{"wrong type mapping", minimal + "server: [1, 2]\n", []string{"server: expected a mapping of keys, got a list"}},
		{"wrong type string", minimal + "approval:\n  rp_id: 7\n", []string{"approval.rp_id: expected a string"}},
		{"bad duration", minimal + "approval:\n  timeout: 5 minutes\n", []string{"approval.timeout: expected a duration such as 30s or 5m, got \"5 minutes\""}},
		{"negative duration", minimal + "server:\n  shutdown_timeout: -1s\n", []string{"server.shutdown_timeout: expected a positive duration"}},
		{"unknown tool", "tools:\n  launch_missiles:\n    level: low\n", []string{"tools.launch_missiles: unknown tool (built-in tools:"}},
		{"missing level", "tools:\n  get_balance: {wait: block}\nledger:\n  accounts: [{id: a, currency: USD, balance: '1'}]\n", []string{"tools.get_balance.level: expected one of low, high, critical, deny, got \"\""}},
		{"bad level", "tools:\n  get_balance: {level: medium}\nledger:\n  accounts: [{id: a, currency: USD, balance: '1'}]\n", []string{"tools.get_balance.level: expected one of"}},
		{"missing rule condition", "tools:\n  transfer:\n    level: low\n    rules: [{level: high}]\nledger:\n  accounts: [{id: a, currency: USD, balance: '1'}]\n", []string{"tools.transfer.rules[0].when: required"}},
		{"no tools", "tools: {}\n", []string{"tools: expected at least one tool"}},
		{"bad currency", "tools:\n  get_balance: {level: low}\nledger:\n  accounts: [{id: a, currency: dollars, balance: '1'}]\n", []string{"ledger.accounts[0].currency: expected an ISO 4217 code"}},
		{"duplicate approver", minimal + "approvers:\n  - {id: al, name: A}\n  - {id: al, name: B}\n", []string{"approvers[1].id: duplicate approver id"}},
		{"ip rp id", minimal + "approval:\n  rp_id: 127.0.0.1\n", []string{"approval.rp_id: WebAuthn refuses IP addresses"}},
		{"bad listen", minimal + "approval:\n  listen: nowhere\n", []string{"approval.listen: expected host:port"}},
		{"bad token", minimal + "http:\n  agents: [{id: bot, token_sha256: abc}]\n", []string{"http.agents[0].token_sha256: expected 64 hex digits"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "bad.yaml")
			if err == nil {
				t.Fatal("Parse accepted a bad config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	_, err := Parse([]byte(minimal+"server:\n  workers: x\n  log_format: xml2\nbogus: 1\n"), "bad.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"server.workers", "bogus"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q misses %s", err, w)
		}
	}
}

func TestEnvironmentOverridesScalars(t *testing.T) {
	t.Setenv("COUNTERSIGN_SERVER_DATA_DIR", "/tmp/elsewhere")
	t.Setenv("COUNTERSIGN_SERVER_WORKERS", "7")
	t.Setenv("COUNTERSIGN_APPROVAL_TIMEOUT", "90s")
	t.Setenv("COUNTERSIGN_SERVER_LOG_FORMAT", "json")
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.DataDir != "/tmp/elsewhere" || c.Server.Workers != 7 || c.Approval.Timeout != 90*time.Second || c.Server.LogFormat != "json" {
		t.Errorf("env overrides not applied: %+v %v", c.Server, c.Approval.Timeout)
	}
}

func TestEnvironmentOverrideIsValidated(t *testing.T) {
	t.Setenv("COUNTERSIGN_SERVER_WORKERS", "lots")
	_, err := Parse(countersign.DefaultConfig(), Embedded)
	if err == nil || !strings.Contains(err.Error(), "server.workers (set by environment variable COUNTERSIGN_SERVER_WORKERS): expected an integer") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadFindsFileOrFallsBackToEmbedded(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != Embedded {
		t.Errorf("Source = %q, want embedded", c.Source)
	}
	if err := os.WriteFile(DefaultFile, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = Load(""); err != nil || c.Source != DefaultFile {
		t.Fatalf("Load found %v, %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestEnsureDataDirIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c := &Config{Server: Server{DataDir: dir}}
	if err := c.EnsureDataDir(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureDataDir(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode = %v, want 0700", fi.Mode().Perm())
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(countersign.DefaultConfig())
	f.Add([]byte(minimal))
	f.Add([]byte("tools:\n  transfer:\n    rules: [{when: x, level: high, quorum: -1}]\n"))
	f.Add([]byte("server: {workers: 1e99, shutdown_timeout: 1h}\n"))
	f.Add([]byte("approvers: [[], {}, null]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

func TestEncodeRoundTrips(t *testing.T) {
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out, "printed.yaml")
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	back.Source = c.Source
	a, _ := Encode(back)
	if string(a) != string(out) {
		t.Errorf("round trip changed the config:\n%s\nvs\n%s", out, a)
	}
}

// config print never shows a secret: a database password, the identity
// provider's client secret, or a SIEM's API key in audit.export.headers.
func TestEncodeHidesSecrets(t *testing.T) {
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	c.Store.URL = "postgres://cs:db-password-1@db.internal/cs"
	c.Identity.ClientSecret = "client-secret-2"
	c.Audit.Export.Headers = map[string]string{"Authorization": "Bearer siem-key-3"}
	out, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"db-password-1", "client-secret-2", "siem-key-3"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("config print shows %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(string(out), "Authorization: xxxxx") {
		t.Errorf("config print drops the header's name:\n%s", out)
	}
	if c.Audit.Export.Headers["Authorization"] != "Bearer siem-key-3" {
		t.Error("Encode changed the running configuration's header")
	}
}

func TestGrantsValidation(t *testing.T) {
	for _, tc := range []struct{ tool, want string }{
		{`{level: critical, approvers: [alice], grants: {max_duration: 15m, max_calls: 10}}`, "tools.transfer.grants: not allowed on a critical tool"},
		{`{level: high, approvers: [alice], grants: {max_duration: 30s, max_calls: 10}}`, "tools.transfer.grants.max_duration: expected a duration from 1m to 24h0m0s"},
		{`{level: high, approvers: [alice], grants: {max_duration: 15m, max_calls: 0}}`, "tools.transfer.grants.max_calls: expected 1 to 1000, got 0"},
		{`{level: high, approvers: [alice], grants: {max_duration: 15m, max_calls: 2, at_most: [amount], free: [amount]}}`, `tools.transfer.grants.free[0]: "amount" is already listed`},
		{`{level: high, approvers: [alice], redact_args: true, grants: {max_duration: 15m, max_calls: 2}}`, "not allowed with redact_args"},
	} {
		src := strings.Replace(minimal, "  get_balance:\n    level: low\n", "  get_balance:\n    level: low\n  transfer: "+tc.tool+"\n", 1) + "approvers: [{id: alice, name: Alice}]\n"
		_, err := Parse([]byte(src), "g.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.tool, err, tc.want)
		}
	}
}

func TestBatchSettingsAreValidated(t *testing.T) {
	c, err := Parse([]byte(minimal), "ok.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Approval.MaxBatch != 10 {
		t.Errorf("approval.max_batch defaults to %d, want 10", c.Approval.MaxBatch)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"no batch size":    {minimal + "approval:\n  max_batch: 0\n", "approval.max_batch: expected 1 (no batches) to 50, got 0"},
		"huge batch":       {minimal + "approval:\n  max_batch: 500\n", "approval.max_batch: expected 1 (no batches) to 50, got 500"},
		"critical batched": {"tools:\n  transfer: {level: critical, batchable: true}\nledger:\n  accounts: [{id: a, currency: USD, balance: '1'}]\n", "tools.transfer.batchable: a critical tool cannot be batchable"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "bad.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWitnessesAreValidated(t *testing.T) {
	const vkey = "witness.example/w1+0ad7d35e+BIqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c" // a cosignature key (alg 4)
	ok := minimal + "audit:\n  witness_max_lag: 10m\n  witnesses:\n    - url: http://127.0.0.1:7380\n      key: " + vkey + "\n"
	c, err := Parse([]byte(ok), "w.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Audit.Witnesses) != 1 || c.Audit.Witnesses[0].Key != vkey || c.Audit.WitnessMaxLag != 10*time.Minute {
		t.Fatalf("witnesses %+v", c.Audit)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"audit:\n  witnesses:\n    - url: 127.0.0.1:7380\n      key: " + vkey, "audit.witnesses[0].url"},
		{"audit:\n  witnesses:\n    - url: http://w\n      key: countersign+00000000+AQ==", "audit.witnesses[0].key: expected the witness's cosignature verifier key"},
		{"audit:\n  witnesses:\n    - {url: http://a, key: " + vkey + "}\n    - {url: http://b, key: " + vkey + "}", "audit.witnesses[1].key: the same witness key as audit.witnesses[0]"},
		{"audit:\n  witnesses:\n    - {url: http://a, key: " + vkey + ", name: x}", "name"},
		{"audit:\n  witness_max_lag: 5m", "audit.witness_max_lag: set without audit.witnesses"},
	} {
		_, err := Parse([]byte(minimal+tc.yaml+"\n"), "w.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// store.url takes a PostgreSQL URL, from the file or the environment;
// anything else is refused, and the password is in no message and not
// in `config print`.
func TestStoreURL(t *testing.T) {
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.URL != "" || c.Store.Target("/data", "countersign.db") != "/data/countersign.db" {
		t.Errorf("default store: %q, target %q", c.Store.URL, c.Store.Target("/data", "countersign.db"))
	}
	for _, good := range []string{
		"postgres://cs:s3cret@db.internal:5432/countersign?sslmode=verify-full",
		"postgresql:///countersign?host=/run/postgresql",
	} {
		t.Setenv("COUNTERSIGN_STORE_URL", good)
		c, err := Parse(countersign.DefaultConfig(), Embedded)
		if err != nil {
			t.Fatalf("%s: %v", good, err)
		}
		if c.Store.Target("/data", "countersign.db") != good {
			t.Errorf("target %q, want %q", c.Store.Target("/data", "countersign.db"), good)
		}
		out, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "s3cret") {
			t.Errorf("config print shows the password:\n%s", out)
		}
	}
	for bad, want := range map[string]string{
		"mysql://cs:s3cret@db/countersign":   "expected a postgres:// or postgresql:// URL",
		"postgres://cs:s3cret@/countersign":  "names no host",
		"postgres://cs:s3cret@db.internal":   "names no database",
		"postgres://cs:s3cret@db:x%zz/count": "not a URL",
	} {
		t.Setenv("COUNTERSIGN_STORE_URL", bad)
		_, err := Parse(countersign.DefaultConfig(), Embedded)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "COUNTERSIGN_STORE_URL") {
			t.Errorf("%s: err = %v, want %q from the variable", bad, err, want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the password: %v", bad, err)
		}
	}
}

func TestAuditExportIsValidated(t *testing.T) {
	c, err := Parse([]byte(minimal+"audit:\n  export:\n    endpoint: https://otel.example:4318/v1/logs\n    headers: {X-Api-Key: k1}\n    batch_size: 100\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	x := c.Audit.Export
	if x.Endpoint != "https://otel.example:4318/v1/logs" || x.BatchSize != 100 || x.Encoding != "protobuf" ||
		x.Timeout != 10*time.Second || x.Interval != time.Second || x.RetryMax != time.Minute || len(x.Headers) != 1 {
		t.Fatalf("audit.export %+v", x)
	}
	if c, err := Parse([]byte(minimal), "x.yaml"); err != nil || c.Audit.Export.Endpoint != "" {
		t.Fatalf("default audit.export: %+v, %v", c.Audit.Export, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"endpoint: otel:4318", "audit.export.endpoint: expected the OTLP/HTTP logs URL, such as http://collector:4318/v1/logs"},
		{"endpoint: http://otel:4318", "audit.export.endpoint: expected the OTLP/HTTP logs URL"},
		{"endpoint: http://otel:4318/v1/logs\n    encoding: xml", `audit.export.encoding: expected one of protobuf, json, got "xml"`},
		{"endpoint: http://otel:4318/v1/logs\n    batch_size: 0", "audit.export.batch_size: expected 1 to 10000, got 0"},
		{"endpoint: http://otel:4318/v1/logs\n    batch_size: 20000", "audit.export.batch_size: expected 1 to 10000, got 20000"},
		{"endpoint: http://otel:4318/v1/logs\n    timeout: 0s", "audit.export.timeout: expected a positive duration"},
		{"endpoint: http://otel:4318/v1/logs\n    retry_max: -1s", "audit.export.retry_max: expected a positive duration"},
		{"endpoint: http://otel:4318/v1/logs\n    headers: {\"bad header\": x}", `audit.export.headers: "bad header" is not an HTTP header name`},
		{"endpoint: http://otel:4318/v1/logs\n    compression: gzip", "compression"},
	} {
		_, err := Parse([]byte(minimal+"audit:\n  export:\n    "+tc.yaml+"\n"), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
