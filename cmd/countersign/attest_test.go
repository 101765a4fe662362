package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
)

// With attestation roots configured, only keys whose maker the roots vouch
// for can be enrolled, the enrollment keeps the attestation, and an auditor
// with the roots checks every enrolled key offline.
func TestOnlyAttestedKeysEnrollAndTheExportProvesIt(t *testing.T) {
	yubi, other := approvaltest.NewMaker(t, "Yubi Test"), approvaltest.NewMaker(t, "Other")
	dir := t.TempDir()
	root := yubi.RootPEM(t, dir)
	otherDir := t.TempDir()
	otherRoot := other.RootPEM(t, otherDir)
	p := startProduct(t, func(c *config.Config) {
		c.Approval.Attestation = "direct"
		c.Approval.AttestationRoots = []string{root}
	})
	u, _ := url.Parse(p.page)
	page := approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page)
	ctx := context.Background()
	enroll := func(approver string, key *approvaltest.SoftKey) error {
		t.Helper()
		link, err := p.Approvals().CreateEnrollment(ctx, approver)
		if err != nil {
			t.Fatal(err)
		}
		return page.Enroll(link, key)
	}
	genuine := approvaltest.NewSoftKey(t, "localhost", p.page)
	yubi.Attest(t, genuine)
	if err := enroll("alice", genuine); err != nil {
		t.Fatalf("a key the roots vouch for: %v", err)
	}
	software := approvaltest.NewSoftKey(t, "localhost", p.page)
	if err := enroll("bob", software); err == nil || !strings.Contains(err.Error(), "attestation") {
		t.Errorf("a key with no attestation enrolled: %v", err)
	}
	foreign := approvaltest.NewSoftKey(t, "localhost", p.page)
	other.Attest(t, foreign)
	if err := enroll("bob", foreign); err == nil {
		t.Error("a key from a maker the roots do not vouch for enrolled")
	}

	p.stop()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", export)
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600)
	if out := runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile, "--attestation-roots", root); !strings.Contains(out, "1 enrolled keys attested by a trusted root") {
		t.Errorf("verify with the roots: %s", out)
	}
	cmd := cliCommand(p.cfg, "audit", "verify", export, "--key", keyFile, "--attestation-roots", otherRoot)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "does not chain to a trusted root") {
		t.Errorf("verify with another maker's root: %v\n%s", err, out)
	}
}

// A key enrolled with no attestation (a server without roots, or one whose
// operator enrolled a software key behind the auditor's back) is refused
// by an auditor who verifies with the roots.
func TestVerifyWithRootsRefusesAKeyEnrolledWithoutAttestation(t *testing.T) {
	maker := approvaltest.NewMaker(t, "Yubi Test")
	dir := t.TempDir()
	root := maker.RootPEM(t, dir)
	p := startProduct(t, nil)
	u, _ := url.Parse(p.page)
	link, err := p.Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := approvaltest.NewPage("127.0.0.1:"+u.Port(), p.page).Enroll(link, approvaltest.NewSoftKey(t, "localhost", p.page)); err != nil {
		t.Fatal(err)
	}
	p.stop()
	export := filepath.Join(dir, "audit.jsonl")
	runCLI(t, p.cfg, "audit", "export", "--out", export)
	keyFile := filepath.Join(dir, "server.pub")
	os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600)
	runCLI(t, p.cfg, "audit", "verify", export, "--key", keyFile) // without roots, it verifies
	out, err := cliCommand(p.cfg, "audit", "verify", export, "--key", keyFile, "--attestation-roots", root).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "made no attestation a root can vouch for") {
		t.Errorf("verify with roots over a key enrolled without attestation: %v\n%s", err, out)
	}
}
