package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A config file's relative paths mean the same wherever serve is started
// from: they resolve against the file's directory.
func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bin", "deploy.sh"), "#!/bin/sh\n", 0o700)
	writeFile(t, filepath.Join(dir, "secrets", "a"), "x", 0o600)
	writeFile(t, filepath.Join(dir, "mcp.yaml"), `
server: {data_dir: data}
deploy:
  command: [bin/deploy.sh, "{service}"]
  services: [api]
  environments: [staging]
secrets: {dir: ./secrets}
tools:
  deploy: {level: low}
  read_secret: {level: low}
`, 0o600)
	t.Chdir(t.TempDir())
	c, err := Load(filepath.Join(dir, "mcp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != dir || c.Server.DataDir != filepath.Join(dir, "data") ||
		c.Deploy.Command[0] != filepath.Join(dir, "bin", "deploy.sh") || c.Secrets.Dir != filepath.Join(dir, "secrets") {
		t.Errorf("paths not resolved against %s: dir %s, data %s, deploy %s, secrets %s",
			dir, c.Dir, c.Server.DataDir, c.Deploy.Command[0], c.Secrets.Dir)
	}
	if _, err := os.Stat(c.Server.DataDir); err == nil {
		t.Error("Load created the data directory")
	}
}

// A path set in the environment is what the shell user typed: relative to
// the working directory.
func TestRelativePathFromEnvironmentResolvesAgainstWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mcp.yaml"), minimal, 0o600)
	cwd := t.TempDir()
	t.Chdir(cwd)
	t.Setenv("COUNTERSIGN_SERVER_DATA_DIR", "state")
	c, err := Load(filepath.Join(dir, "mcp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.DataDir != filepath.Join(cwd, "state") {
		t.Errorf("data dir %s, want it under %s", c.Server.DataDir, cwd)
	}
}

// The embedded default runs from any directory: its demo files are written
// into the data directory at first start, so Load accepts them before they
// exist, and creates nothing.
func TestEmbeddedDefaultNeedsNoFiles(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	t.Chdir(t.TempDir())
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(state, "countersign")
	if c.Source != Embedded || c.Server.DataDir != data || c.Dir != data {
		t.Errorf("source %s, data dir %s, dir %s", c.Source, c.Server.DataDir, c.Dir)
	}
	if c.Deploy.Command[0] != filepath.Join(data, "demo", "deploy.sh") || c.Secrets.Dir != filepath.Join(data, "demo", "secrets") {
		t.Errorf("demo paths %s %s", c.Deploy.Command[0], c.Secrets.Dir)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("Load wrote %v into the state directory", entries)
	}
	// Pointed elsewhere, the same paths are checked like any other.
	t.Setenv("COUNTERSIGN_SECRETS_DIR", "nowhere")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "secrets.dir (set by environment variable COUNTERSIGN_SECRETS_DIR): ") {
		t.Errorf("missing secrets dir from the environment: %v", err)
	}
}

// Changing only the listen address moves everything that depends on it.
func TestApprovalSettingsFollowListen(t *testing.T) {
	t.Setenv("COUNTERSIGN_APPROVAL_LISTEN", "127.0.0.1:9000")
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Approval
	if a.PublicURL != "http://localhost:9000" || strings.Join(a.Origins, ",") != "http://localhost:9000" ||
		strings.Join(a.AllowedHosts, ",") != "localhost:9000,127.0.0.1:9000" || a.RPID != "localhost" {
		t.Errorf("not derived from the new listen: %+v", a)
	}
	// A listener on port 0 learns its port at start and derives again.
	a.Listen = "127.0.0.1:0"
	if err := a.Derive("127.0.0.1:43210"); err != nil || a.PublicURL != "http://localhost:43210" || a.AllowedHosts[0] != "localhost:43210" {
		t.Errorf("re-derived: %+v %v", a, err)
	}
	// Settings someone wrote are kept, not derived.
	t.Setenv("COUNTERSIGN_APPROVAL_LISTEN", "") // empty is unset, as for viper
	c, err = Parse([]byte(minimal+`
approval:
  listen: 0.0.0.0:443
  public_url: https://approve.example.com
  tls_cert_file: a.crt
  tls_key_file: a.key
`), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a = c.Approval
	if a.RPID != "approve.example.com" || a.Origins[0] != "https://approve.example.com" || strings.Join(a.AllowedHosts, ",") != "approve.example.com" {
		t.Errorf("derived from public_url: %+v", a)
	}
}

// Approval settings that contradict each other leave a page that refuses
// every approval; each is refused with the key to change, all at once.
func TestApprovalContradictionsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"public_url on another port", "approval:\n  listen: 127.0.0.1:9000\n  public_url: http://localhost:8710\n",
			[]string{"approval.public_url: http://localhost:8710 points at port 8710, but approval.listen is 127.0.0.1:9000"}},
		{"origin missing", "approval:\n  origins: [http://localhost:9999]\n",
			[]string{"approval.origins: does not include http://localhost:8710"}},
		{"host missing", "approval:\n  allowed_hosts: [example.com]\n",
			[]string{"approval.allowed_hosts: does not include localhost:8710"}},
		{"rp id mismatch", "approval:\n  rp_id: example.com\n",
			[]string{"approval.rp_id: example.com is not public_url's host localhost", "approval.origins[0]: host localhost is not example.com"}},
		{"http off loopback", "approval:\n  listen: 0.0.0.0:8710\n  public_url: http://approve.example.com:8710\n",
			[]string{"approval.public_url: http://approve.example.com:8710 is plain http on a host other than localhost"}},
		{"remote listen without tls", "approval:\n  listen: 0.0.0.0:8710\n",
			[]string{"approval.listen: 0.0.0.0:8710 is reachable from beyond this machine, but the page has no TLS"}},
		{"tls but http", "approval:\n  tls_cert_file: a.crt\n  tls_key_file: a.key\n  public_url: http://localhost:8710\n",
			[]string{"approval.public_url: http://localhost:8710 is http, but tls_cert_file makes the page serve https"}},
		{"ip listen without a name", "approval:\n  listen: 192.0.2.7:8710\n",
			[]string{"approval.public_url: required when listen is the IP address 192.0.2.7"}},
		{"path in public_url", "approval:\n  public_url: http://localhost:8710/approve\n",
			[]string{"approval.public_url: expected a URL with no path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal+tc.yaml), "bad.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), "bad.yaml: "+w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// Load checks what serve opens at start, and says which key names it.
func TestLoadChecksFilesServeWouldOpen(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "not-exec.sh"), "#!/bin/sh\n", 0o600)
	writeFile(t, filepath.Join(dir, "a-file"), "x", 0o600)
	writeFile(t, filepath.Join(dir, "mcp.yaml"), `
server: {data_dir: a-file/data}
deploy:
  command: [./not-exec.sh, "{service}"]
  services: [api]
  environments: [staging]
secrets: {dir: a-file}
approval:
  tls_cert_file: missing.crt
  tls_key_file: missing.key
upstreams:
  - {name: files, command: [./no-such-server], dir: nowhere}
  - {name: other, command: [no-such-program-in-path]}
tools:
  deploy: {level: low}
  read_secret: {level: low}
`, 0o600)
	_, err := Load(filepath.Join(dir, "mcp.yaml"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		"server.data_dir: cannot create " + filepath.Join(dir, "a-file", "data") + ": " + filepath.Join(dir, "a-file") + " is not a directory",
		"deploy.command[0]: " + filepath.Join(dir, "not-exec.sh") + " is not executable",
		"secrets.dir: " + filepath.Join(dir, "a-file") + " is not a directory",
		"approval.tls_cert_file: cannot load the certificate and key",
		"upstreams[0].command[0]: " + filepath.Join(dir, "no-such-server") + " does not exist",
		"upstreams[0].dir: " + filepath.Join(dir, "nowhere") + " does not exist",
		`upstreams[1].command[0]: "no-such-program-in-path" is not an executable program in PATH`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n%v\ndoes not contain %q", err, w)
		}
	}
}

// A value that cannot be decoded is reported once, with the rest of the
// problems, not again by every check that then sees its zero value.
func TestDecodeAndValidationProblemsTogether(t *testing.T) {
	_, err := Parse([]byte(minimal+"approval:\n  timeout: soon\n  listen: nowhere\nserver:\n  workers: 0\n"), "bad.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, w := range []string{"approval.timeout: expected a duration", "approval.listen: expected host:port", "server.workers: expected 1 to 100"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q missing from\n%s", w, msg)
		}
	}
	if n := strings.Count(msg, "approval.timeout"); n != 1 {
		t.Errorf("approval.timeout reported %d times:\n%s", n, msg)
	}
}

// A list in an environment variable is comma-separated.
func TestEnvironmentListIsCommaSeparated(t *testing.T) {
	t.Setenv("COUNTERSIGN_HTTP_ALLOWED_HOSTS", "localhost, agents.internal")
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.HTTP.AllowedHosts, "|") != "localhost|agents.internal" {
		t.Errorf("allowed hosts %q", c.HTTP.AllowedHosts)
	}
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// A page reachable beyond loopback needs TLS, or an explicit override for a
// proxy that terminates it; either way approvers must sign in.
func TestRemoteApproverPage(t *testing.T) {
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Approval.Remote() {
		t.Errorf("the default loopback page is remote: %+v", c.Approval)
	}
	for _, yaml := range []string{
		"approval:\n  listen: 0.0.0.0:8710\n  insecure_no_tls: true\n",
		"approval:\n  listen: 0.0.0.0:443\n  public_url: https://approve.example.com\n  tls_cert_file: a.crt\n  tls_key_file: a.key\n",
		"approval:\n  listen: 127.0.0.1:8710\n  public_url: https://approve.example.com\n  allowed_hosts: [approve.example.com]\n",
	} {
		c, err := Parse([]byte(minimal+yaml), "ok.yaml")
		if err != nil {
			t.Fatalf("%s: %v", yaml, err)
		}
		if !c.Approval.Remote() {
			t.Errorf("%s: not remote", yaml)
		}
	}
}
