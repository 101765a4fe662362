package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/guard/routine"
	"github.com/countersign/countersign/store/fulldisk"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// A real serve whose data directory's disk fills up while a transfer is
// between the ledger's commit and its record: /readyz fails saying the
// database and the audit log cannot be written; the log stays quiet (a
// bounded number of lines over the full period); an approver's tap is
// told nothing was approved; and once the disk has room the running
// process records the transfer's outcome, with no restart, and the
// export verifies and agrees with the ledger.
func TestDiskFullUnderServe(t *testing.T) {
	storetest.SQLiteOnly(t, "fills the disk the SQLite file is on; PostgreSQL's is the database server's")
	disk := fulldisk.Mount(t, 64<<20)
	s := newSite(t, func(c *config.Config) {
		pollModeFor("transfer")(c)
		c.Server.DataDir = filepath.Join(disk.Dir, "data")
	})
	hold := t.TempDir()
	n := s.start("COUNTERSIGN_CRASHTEST_HOLD=transfer", "COUNTERSIGN_CRASHTEST_DIR="+hold, "COUNTERSIGN_CRASHTEST_RELEASE=1")
	readyz := strings.TrimSuffix(n.mcp, "/mcp") + "/readyz"
	cs := n.agent()
	big := pending(t, cs, "transfer", bigTransfer) // waits for a tap

	answer := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer",
			Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 12.5, "currency": "USD"}})
		if err != nil {
			answer <- err.Error()
			return
		}
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		answer <- b.String()
	}()
	waitFor(t, "the transfer held after the ledger's commit", func() bool {
		_, err := os.Stat(filepath.Join(hold, "held"))
		return err == nil
	})

	disk.Fill(t)
	linesBefore := strings.Count(n.stderr.String(), "\n")
	if err := os.WriteFile(filepath.Join(hold, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := <-answer; !strings.Contains(got, "withheld") {
		t.Fatalf("the transfer's answer while its record cannot be written: %q", got)
	}
	time.Sleep(1100 * time.Millisecond) // past the probe's one-second reuse
	code, body := httpGet(t, readyz)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL  database: not writable") || !strings.Contains(body, "FAIL  audit: cannot be written since") {
		t.Fatalf("/readyz on a full disk: %d\n%s", code, body)
	}
	_, err := n.page.Decide(big, string(vocab.Approve), s.key)
	var pe *approvaltest.Error
	if !errors.As(err, &pe) || pe.Status != http.StatusServiceUnavailable || pe.Msg != "the audit log cannot be written: nothing was approved" {
		t.Fatalf("a tap on a full disk: %v", err)
	}
	// The disk stays full a while: the lines it costs stay few.
	const full = 5 * time.Second
	time.Sleep(full)
	lines := strings.Count(n.stderr.String(), "\n") - linesBefore
	if lines > 60 {
		t.Fatalf("%d log lines in %v of a full disk, want a back-off's few:\n%s", lines, full, lastLines(n.stderr.String(), 40))
	}
	t.Logf("%d log lines in %v of a full disk", lines, full)

	disk.Release(t)
	waitFor(t, "/readyz ready once the disk has room", func() bool {
		code, _ := httpGet(t, readyz)
		return code == http.StatusOK
	})
	// Recorded by the running process: an export taken while it serves.
	var late bool
	waitFor(t, "the transfer's outcome recorded without a restart", func() bool {
		for _, e := range s.exportAndVerify().entries {
			if e.Kind == vocab.KindCallExecuted && e.Tool == "transfer" && strings.Contains(e.Reason, routine.NoteLate) {
				late = true
			}
		}
		return late
	})
	if r, err := n.page.Get(big); err != nil || r.State != vocab.StatePending {
		t.Errorf("the request tapped on a full disk: %+v, %v (nothing was approved)", r, err)
	}
	n.term()
	ex := s.exportAndVerify()
	checkLedgerAgainstLog(t, s.ledgerTransfers(), ex)
	checkEveryCallHasOutcome(t, ex)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
