package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// brokenBase is a valid configuration whose lines the cases below break,
// one class of problem each. Its files are made by brokenDir.
const brokenBase = `server:
  workers: 8
approvers: [{id: alice, name: Alice, roles: [treasury, ops]}]
approval:
  listen: 127.0.0.1:8710
ledger:
  accounts: [{id: operating, currency: USD, balance: "100.00"}]
deploy:
  command: [./deploy.sh, "{service}", "{version}", "{environment}"]
  services: [api]
  environments: [staging, production]
secrets:
  dir: ./secrets
tools:
  transfer:
    level: low
    approvers: [role:treasury]
    rules: [{when: "args.amount > 10", level: high}]
  deploy:
    level: low
    approvers: [role:ops]
    rules: [{when: "args.environment == 'production'", level: high}]
  read_secret: {level: low}
upstreams: []
`

type brokenCase struct {
	class   string
	replace [2]string // old, new in brokenBase
	env     string    // NAME=value, for a bad override
	want    string    // after "<file>: "
}

var brokenCases = []brokenCase{
	{class: "value of the wrong type", replace: [2]string{"  workers: 8", "  workers: many"},
		want: `server.workers: expected an integer, got string "many"`},
	{class: "bad environment override", env: "COUNTERSIGN_APPROVAL_TIMEOUT=soon",
		want: `approval.timeout (set by environment variable COUNTERSIGN_APPROVAL_TIMEOUT): expected a duration such as 30s or 5m, got "soon"`},
	{class: "missing program", replace: [2]string{"[./deploy.sh,", "[./missing.sh,"},
		want: "deploy.command[0]: DIR/missing.sh does not exist"},
	{class: "program not executable", replace: [2]string{"upstreams: []", "upstreams: [{name: files, command: [./plain.sh]}]"},
		want: "upstreams[0].command[0]: DIR/plain.sh is not executable (mode -rw-r--r--): chmod +x it"},
	{class: "secrets dir not a directory", replace: [2]string{"  dir: ./secrets", "  dir: ./plain.sh"},
		want: "secrets.dir: DIR/plain.sh is not a directory"},
	{class: "approval settings that disagree", replace: [2]string{"  listen: 127.0.0.1:8710", "  listen: 127.0.0.1:8710\n  public_url: http://localhost:9999"},
		want: "approval.public_url: http://localhost:9999 points at port 9999, but approval.listen is 127.0.0.1:8710"},
	{class: "rule names a field the arguments lack", replace: [2]string{`"args.amount > 10"`, `"args.amout > 10"`},
		want: `tools.transfer.rules[0].when: column 5 (at ".amout > 10"): there is no field "amout"`},
	{class: "rule compares a field with the wrong type", replace: [2]string{`"args.environment == 'production'"`, `"args.environment == 5"`},
		want: `tools.deploy.rules[0].when: column 18 (at "== 5"): == cannot combine a string with an int`},
	{class: "a balance the ledger cannot hold", replace: [2]string{`balance: "100.00"`, `balance: "100.001"`},
		want: `ledger.accounts[0].balance: "100.001": `},
	{class: "unknown approver", replace: [2]string{"    approvers: [role:ops]", "    approvers: [mallory]"},
		want: `tools.deploy.approvers[0]: unknown approver "mallory"`},
	{class: "a quorum its approvers cannot meet", replace: [2]string{"  read_secret: {level: low}", "  read_secret: {level: critical, approvers: [alice], quorum: 3}"},
		want: "tools.read_secret.quorum: critical quorum 3 exceeds the 1 distinct approver(s) allowed by tools.read_secret.approvers (alice)"},
}

func brokenDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"deploy.sh": 0o755, "plain.sh": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Each class of problem serve would fail on is refused by config validate
// with its key path, and by serve before it creates anything; together,
// they are all reported at once.
func TestBrokenConfigsAreRefusedBeforeServeStarts(t *testing.T) {
	n := newNewcomer(t)
	n.listen = "" // the file's listen is part of what is checked; serve never gets to listen
	dir := brokenDir(t)
	file := filepath.Join(dir, "mcp.yaml")
	if err := os.WriteFile(file, []byte(brokenBase), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := n.run(t, n.cwd, n.env(), "config", "validate", file); code != 0 {
		t.Fatalf("the base is broken already: %s%s", out, errOut)
	}

	check := func(t *testing.T, yaml string, env []string, wants []string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"config", "validate", file}, {"serve", "--config", file}} {
			_, errOut, code := n.run(t, n.cwd, n.env(env...), args...)
			if code != 2 {
				t.Errorf("%s: exit %d, want 2\n%s", args[0], code, errOut)
			}
			for _, w := range wants {
				if w = file + ": " + strings.ReplaceAll(w, "DIR", dir); !strings.Contains(errOut, w) {
					t.Errorf("%s: stderr lacks\n  %s\ngot\n%s", args[0], w, errOut)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(n.state, "countersign")); err == nil {
			t.Fatal("a refused serve created the data directory")
		}
	}

	all, allEnv, wants := brokenBase, []string{}, []string{}
	for _, tc := range brokenCases {
		t.Run(tc.class, func(t *testing.T) {
			yaml := brokenBase
			if tc.replace[0] != "" {
				if !strings.Contains(yaml, tc.replace[0]) {
					t.Fatalf("%q is not in the base", tc.replace[0])
				}
				yaml = strings.Replace(yaml, tc.replace[0], tc.replace[1], 1)
			}
			var env []string
			if tc.env != "" {
				env = []string{tc.env}
			}
			check(t, yaml, env, []string{tc.want})
		})
		if tc.replace[0] != "" {
			all = strings.Replace(all, tc.replace[0], tc.replace[1], 1)
		}
		if tc.env != "" {
			allEnv = append(allEnv, tc.env)
		}
		wants = append(wants, tc.want)
	}
	t.Run("all at once", func(t *testing.T) { check(t, all, allEnv, wants) })
}

// A tool's quorum that every critical rule overrides validates, with a
// warning naming the tool and the numbers, since whoever reads the file may
// take it for a protection it never gives.
func TestConfigValidateWarnsOfAToolQuorumNeverUsed(t *testing.T) {
	n := newNewcomer(t)
	dir := brokenDir(t)
	file := filepath.Join(dir, "mcp.yaml")
	yaml := strings.Replace(brokenBase, `    rules: [{when: "args.amount > 10", level: high}]`,
		`    quorum: 2
    rules: [{when: "args.amount > 10", level: high}, {when: "args.amount > 99", level: critical, quorum: 1}]`, 1)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := n.run(t, n.cwd, n.env(), "config", "validate", file)
	want := "tools.transfer.quorum 2 is never used: transfer is not critical itself and every critical rule sets its own quorum (rules[1] sets 1)"
	if code != 0 || !strings.Contains(out, "valid") || !strings.Contains(errOut, want) {
		t.Errorf("exit %d\n%s%s\nwant the warning\n%s", code, out, errOut, want)
	}
}
