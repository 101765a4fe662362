package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// secondServe runs serve on the site's data directory with other ports
// (random ones) and returns its exit status and stderr; it must exit by
// itself.
func (s *site) secondServe(args ...string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"serve", "--config", s.path}, args...)...)
	cmd.Dir = repoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		s.t.Fatalf("the second serve was still running after 60s:\n%s", stderr.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return code, stderr.String()
}

// One server per data directory: a second serve on it, with other ports,
// exits at once naming the first; the other commands keep working beside
// the first; once the first stops, or is killed, a new one starts.
func TestSecondServeOnADataDirectoryIsRefused(t *testing.T) {
	s := newSite(t, pollModeFor("transfer"))
	first := s.start() // enrolls alice with the CLI while it runs
	pay := map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 9000, "currency": "USD"}
	if st := transferStatus(t, first.agent(), pay); st != "completed" {
		t.Fatalf("the first 9,000: %s", st)
	}

	for _, args := range [][]string{{"--http", "127.0.0.1:0"}, nil} { // agents over HTTP, and on stdio
		code, stderr := s.secondServe(args...)
		want := fmt.Sprintf("countersign: data directory %s is in use by countersign serve (pid %d, since ", s.cfg.Server.DataDir, first.cmd.Process.Pid)
		if code == 0 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "approver page 127.0.0.1:") ||
			!strings.Contains(stderr, "agents 127.0.0.1:") || !strings.HasSuffix(strings.TrimSpace(stderr), "stop it first") {
			t.Errorf("second serve %v: exit %d, stderr:\n%s\nwant it to name the first: %s…", args, code, stderr, want)
		}
	}

	// The CLI works beside the running server, and the refused serves
	// left no trace in the log.
	s.cli("approvers", "enroll", "alice")
	ex := s.exportAndVerify()
	if n := len(ex.entries); n == 0 {
		t.Fatal("empty export")
	}
	// The first still serves, and its windows still count its 9,000.
	if st := transferStatus(t, first.agent(), pay); st != "authorization_pending" {
		t.Errorf("9,000 more through the first: %s, want it to wait for a human", st)
	}

	first.term()
	second := s.start()
	second.kill()
	third := s.start()
	if st := transferStatus(t, third.agent(), pay); st != "authorization_pending" {
		t.Errorf("9,000 more after the restarts: %s, want it to wait for a human", st)
	}
	third.term()
}
