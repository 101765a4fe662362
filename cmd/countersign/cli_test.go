package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// cli runs the built binary from the repository root against dataDir and
// returns stdout, stderr and the exit status.
func cli(t *testing.T, dataDir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "COUNTERSIGN_SERVER_DATA_DIR="+dataDir)
	if url, ok := storetest.StandIn(filepath.Join(dataDir, store.FileName)); ok {
		cmd.Env = append(cmd.Env, "COUNTERSIGN_STORE_URL="+url) // the PostgreSQL pass's server on it
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestConfigValidateAndPrint(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := cli(t, dir, "config", "validate")
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate default: %d %s %s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad-rule.yaml")
	os.WriteFile(bad, []byte(`
approvers: [{id: al, name: Al, roles: [treasury]}]
ledger:
  accounts: [{id: a, currency: USD, balance: "1"}]
tools:
  transfer:
    level: low
    approvers: [role:treasury]
    rules: [{when: "args.amount > ", level: high}]
`), 0o600)
	_, errOut, code = cli(t, dir, "config", "validate", bad)
	if code != 2 || !strings.Contains(errOut, "tools.transfer.rules[0].when") {
		t.Errorf("a rule that does not compile: exit %d, stderr %s", code, errOut)
	}
	cmd := exec.Command(binPath, "config", "print")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "COUNTERSIGN_SERVER_WORKERS=9")
	printed, err := cmd.Output()
	if err != nil || !strings.Contains(string(printed), "workers: 9") {
		t.Errorf("config print does not show the env override: %v\n%s", err, printed)
	}
}

func TestPolicyTestCommand(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := cli(t, dir, "policy", "test", "--tool", "transfer",
		"--args", `{"from":"operating","to":"Acme Supplies","amount":300000,"currency":"USD"}`)
	if code != 0 || !strings.Contains(out, "decision:") || !strings.Contains(out, "critical") || !strings.Contains(out, "very-large") {
		t.Errorf("single decision: %d\n%s\n%s", code, out, errOut)
	}
	// Facts come from the ledger: a payee it does not know raises the level.
	out, _, _ = cli(t, dir, "policy", "test", "--tool", "transfer",
		"--args", `{"from":"operating","to":"Nobody Known","amount":5,"currency":"USD"}`)
	if !strings.Contains(out, "high") {
		t.Errorf("unknown payee not high:\n%s", out)
	}
	out, errOut, code = cli(t, dir, "policy", "test", "--cases", "authz/testdata/cases.yaml")
	if code != 0 || !strings.Contains(out, " 0 failed") {
		t.Errorf("shipped cases: %d\n%s\n%s", code, out, errOut)
	}
	wrong := filepath.Join(dir, "wrong.yaml")
	os.WriteFile(wrong, []byte(`cases:
  - name: big is low (wrong)
    tool: transfer
    args: {from: operating, to: Acme Supplies, amount: 50000, currency: USD}
    expect: low
`), 0o600)
	out, _, code = cli(t, dir, "policy", "test", "--cases", wrong)
	if code == 0 || !strings.Contains(out, "FAIL") {
		t.Errorf("a mismatching case must fail: %d\n%s", code, out)
	}
}

func TestApproversAndAuditCommands(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := cli(t, dir, "approvers", "enroll", "alice")
	if code != 0 || !strings.Contains(out, "http://localhost:8710/enroll/") {
		t.Fatalf("enroll: %d %s %s", code, out, errOut)
	}
	if _, errOut, code = cli(t, dir, "approvers", "enroll", "mallory"); code == 0 {
		t.Errorf("enrolling an undeclared approver succeeded: %s", errOut)
	}
	if out, _, code = cli(t, dir, "approvers", "list"); code != 0 || !strings.Contains(out, "alice") {
		t.Errorf("list: %d %s", code, out)
	}

	export := filepath.Join(dir, "audit.jsonl")
	if _, errOut, code = cli(t, dir, "audit", "export", "--out", export); code != 0 {
		t.Fatalf("export: %s", errOut)
	}
	pub, _, _ := cli(t, dir, "audit", "pubkey")
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(pub), 0o600)
	out, errOut, code = cli(t, dir, "audit", "verify", export, "--key", keyFile)
	if code != 0 {
		t.Fatalf("verify of a genuine export failed: %s %s", out, errOut)
	}

	// Nothing appended since: an export --since the last seq holds only
	// the checkpoint and verifies against the previous export, saying it
	// proves nothing new. Past the end is an error, and no file.
	again := filepath.Join(dir, "again.jsonl")
	if _, errOut, code = cli(t, dir, "audit", "export", "--since", "1", "--out", again); code != 0 {
		t.Fatalf("export --since 1: %s", errOut)
	}
	out, errOut, code = cli(t, dir, "audit", "verify", again, "--key", keyFile, "--previous", export)
	if code != 0 || !strings.Contains(out, "Nothing new is proven") {
		t.Errorf("verify of an export with nothing new: exit %d\n%s%s", code, out, errOut)
	}
	past := filepath.Join(dir, "past.jsonl")
	_, errOut, code = cli(t, dir, "audit", "export", "--since", "2", "--out", past)
	if code == 0 || !strings.Contains(errOut, "export --since 2: the log ends at seq 1") {
		t.Errorf("export --since past the end: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(past); !os.IsNotExist(err) {
		t.Errorf("export --since past the end left a file: %v", err)
	}

	// One changed byte in the enrollment entry must be caught at seq 1.
	data, _ := os.ReadFile(export)
	tampered := filepath.Join(dir, "tampered.jsonl")
	os.WriteFile(tampered, bytes.Replace(data, []byte(`"alice"`), []byte(`"alicf"`), 1), 0o600)
	out, errOut, code = cli(t, dir, "audit", "verify", tampered, "--key", keyFile)
	if code == 0 || !strings.Contains(out+errOut, "seq 1") {
		t.Errorf("tampered export: exit %d\n%s%s", code, out, errOut)
	}
}

// The key given as a second argument gets told where it goes, not only
// that one argument was expected.
func TestAuditVerifyKeyAsArgumentSaysUseKey(t *testing.T) {
	_, stderr, code := cli(t, t.TempDir(), "audit", "verify", "export.jsonl", "countersign+abc+KEY")
	if code == 0 || !strings.Contains(stderr, "--key countersign+abc+KEY") {
		t.Fatalf("exit %d, stderr %q: want a refusal naming --key", code, stderr)
	}
	if _, stderr, code := cli(t, t.TempDir(), "audit", "verify", "a", "b", "c"); code == 0 || !strings.Contains(stderr, "accepts 1 arg") {
		t.Fatalf("three arguments: exit %d, stderr %q", code, stderr)
	}
}
