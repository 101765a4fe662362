package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// snapshot lists every file under dir with its mode, size and SHA-256.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := rel + " " + fi.Mode().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			line += " " + hex.EncodeToString(sum[:8])
		}
		out = append(out, line)
		return nil
	})
	slices.Sort(out)
	return out
}

// policy test is a dry run: before serve ever ran it decides with the
// ledger serve would start with and creates no data directory, no demo
// file and no database; after serve ran it reads the ledger serve left and
// changes no byte of the data directory. Its scratch ledger is removed.
func TestPolicyTestWritesNothing(t *testing.T) {
	n := newNewcomer(t)
	tmp := t.TempDir()
	env := n.env("TMPDIR=" + tmp)
	check := func(t *testing.T) {
		t.Helper()
		for to, want := range map[string]string{"Nobody Known": "high", "Acme Supplies": "low"} {
			out, errOut, code := n.run(t, n.cwd, env, "policy", "test", "--tool", "transfer",
				"--args", `{"from":"operating","to":"`+to+`","amount":5,"currency":"USD"}`)
			if code != 0 || !strings.Contains(strings.Split(out, "\n")[0], want) {
				t.Errorf("a transfer to %s: exit %d, want %s\n%s%s", to, code, want, out, errOut)
			}
		}
		out, errOut, code := n.run(t, repoRoot, env, "policy", "test", "--cases", "authz/testdata/cases.yaml")
		if code != 0 || !strings.Contains(out, " 0 failed") {
			t.Errorf("shipped cases: exit %d\n%s%s", code, out, errOut)
		}
		if got := tree(t, tmp); got != nil {
			t.Errorf("policy test left %v in the temporary directory", got)
		}
	}

	check(t)
	if got := tree(t, n.state); got != nil {
		t.Fatalf("policy test before serve wrote %v into the state directory", got)
	}

	cs, stop := n.stdio(t, n.cwd, env)
	structuredText(t, cs, "get_balance", map[string]any{})
	stop()
	before := snapshot(t, n.state)
	if !slices.ContainsFunc(before, func(s string) bool { return strings.HasPrefix(s, "countersign/countersign.db ") }) {
		t.Fatalf("serve left no database: %v", before)
	}
	check(t)
	if after := snapshot(t, n.state); !slices.Equal(before, after) {
		t.Errorf("policy test changed the data directory:\nbefore %v\nafter  %v", before, after)
	}
}
