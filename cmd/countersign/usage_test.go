package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// salami is 9,999 to a known payee: under the shipped policy's 10,000 a
// day to one payee, so the first runs at once and the second needs a human.
var salami = map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 9999, "currency": "USD"}

// transferStatus calls transfer (poll mode) and says whether it ran at
// once ("completed") or waits for a human ("authorization_pending").
func transferStatus(t *testing.T, cs *sdk.ClientSession, args map[string]any) string {
	t.Helper()
	res := servertest.CallTool(t, cs, "transfer", args)
	var out struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(servertest.ResultText(res)), &out); err != nil || res.IsError {
		t.Fatalf("transfer: %s (%v)", servertest.ResultText(res), err)
	}
	return out.Status
}

// The usage windows are rebuilt exactly after a restart of the real
// server, whatever redact_args says: 9,999 ran, the server stopped (cleanly,
// or killed after the ledger paid and before the record), and 9,999 more to
// the same payee waits for a human.
func TestUsageWindowsSurviveRestartWithRedactedArguments(t *testing.T) {
	for _, tc := range []struct {
		name   string
		redact bool
		killed bool
	}{
		{"redacted", true, false},
		{"redacted, killed between commit and record", true, true},
		{"in the log", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, func(c *config.Config) {
				pollModeFor("transfer")(c)
				tr := c.Tools["transfer"]
				tr.RedactArgs = tc.redact
				c.Tools["transfer"] = tr
			})
			if !tc.killed {
				n := s.start()
				if st := transferStatus(t, n.agent(), salami); st != "completed" {
					t.Fatalf("the first 9,999: %s, want it to run at once", st)
				}
				n.term()
			} else {
				hold := t.TempDir()
				n := s.start("COUNTERSIGN_CRASHTEST_HOLD=transfer", "COUNTERSIGN_CRASHTEST_DIR="+hold)
				cs := n.agent()
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: salami}) // held, then killed
				}()
				deadline := time.Now().Add(30 * time.Second)
				for {
					if _, err := os.Stat(filepath.Join(hold, "held")); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the transfer was never held:\n%s", n.stderr.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
				n.kill()
			}

			n := s.start()
			if st := transferStatus(t, n.agent(), salami); st != "authorization_pending" {
				t.Errorf("after the restart, 9,999 more to the same payee: %s, want it to wait for a human", st)
			}
			n.term()
			ex := s.exportAndVerify()
			var executed int
			for _, e := range ex.entries {
				if e.Tool != "transfer" {
					continue
				}
				if tc.redact && (len(e.Args) != 0 || !e.ArgsRedact) {
					t.Errorf("%s keeps the arguments: %s", e.Kind, e.Args)
				}
				if e.Kind == vocab.KindCallExecuted {
					executed++
				}
			}
			if executed != 1 {
				t.Errorf("%d transfers executed, want 1", executed)
			}
		})
	}
}
