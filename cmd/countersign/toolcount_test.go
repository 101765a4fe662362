package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/daemon/daemontest"
)

// config validate counts the tools as serve does: the MCP tools agents are
// offered, not the entries under tools (ciba among them is a policy).
func TestValidateCountsToolsAsServeDoes(t *testing.T) {
	out, errOut, code := cli(t, t.TempDir(), "config", "validate")
	if code != 0 {
		t.Fatalf("validate: exit %d %s %s", code, out, errOut)
	}
	s, err := assemble(context.Background(), testConfig(t, nil), daemontest.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if want := fmt.Sprintf("valid (%d tools, 0 upstreams,", len(s.Tools().Specs())); !strings.Contains(out, want) {
		t.Errorf("validate says %q; serve offers %d tools", out, len(s.Tools().Specs()))
	}
}
