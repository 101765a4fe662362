package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
	"github.com/countersign/countersign/witness/witnesstest"
)

// The whole story against a real litewitness and the real binary: every
// checkpoint is cosigned; a witness that goes down holds no call up, shows
// as lag on /readyz and in the metrics, and is caught up when it is back;
// the export carries the cosignatures and audit verify checks them; a
// database restored from an older copy is refused at start, naming the
// size the witness holds, until --accept-rollback, which is recorded.
func TestLitewitnessGuardsTheLogAgainstRollback(t *testing.T) {
	storetest.SQLiteOnly(t, "it restores an older copy of the database by copying its files")
	lw := witnesstest.Start(t)
	s := newSite(t, func(c *config.Config) {
		c.Audit.CheckpointEvery = 100 * time.Millisecond
		c.Audit.Witnesses = []config.Witness{{URL: lw.URL, Key: lw.VKey}}
	})
	pub := strings.TrimSpace(s.cli("audit", "pubkey"))
	lw.AddLog(audit.KeyName, pub)
	small := map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}

	n := s.start()
	servertest.CallTool(t, n.agent(), "transfer", small)
	waitReady(t, n, func(body string) bool {
		return strings.Contains(body, "cosigned tree size") && !strings.Contains(body, "behind")
	})
	n.term()
	first := s.exportFile()
	witnessedNote := witnessedIn(t, first)
	backup := t.TempDir()
	copyDB(t, s.cfg.Server.DataDir, backup)

	// The witness goes away: calls go on, /readyz stays ready but says
	// how far behind it is, and so do the metrics.
	n = s.start()
	lw.Stop()
	cs := n.agent()
	for range 3 {
		servertest.CallTool(t, cs, "transfer", small)
	}
	// Lag shows as soon as entries are uncosigned; the failed attempt
	// once the sender has tried.
	body := waitReady(t, n, func(body string) bool {
		return strings.Contains(body, "behind") && strings.Contains(body, "last attempt")
	})
	if !strings.Contains(body, "ok    witness "+witnesstest.Name+": cosigned tree size") || !strings.Contains(body, "last attempt") {
		t.Fatalf("/readyz with the witness down:\n%s", body)
	}
	// The lag is counted against the newest checkpoint, which may have been
	// made before the last transfer: wait for the next one.
	lagKey := `countersign_witness_lag_entries{witness="` + witnesstest.Name + `"}`
	m := scrape(t, n.base())
	for deadline := time.Now().Add(10 * time.Second); m[lagKey] < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m = scrape(t, n.base())
	}
	if lag := m[lagKey]; lag < 3 {
		t.Fatalf("countersign_witness_lag_entries %v with 3 transfers uncosigned", lag)
	}
	if m[`countersign_witness_refused{witness="`+witnesstest.Name+`"}`] != 0 {
		t.Fatal("a witness that is down counted as refusing")
	}
	lw.Restart()
	waitReady(t, n, func(body string) bool { return !strings.Contains(body, "behind") })
	n.term()
	if got := lw.Size(audit.KeyName); got < 7 {
		t.Fatalf("the witness holds size %d after catching up", got)
	}
	witnessedSize := lw.Size(audit.KeyName)

	// audit verify: the right witness key passes, another fails; the
	// first export's witnessed checkpoint serves as --previous.
	file := s.exportFile()
	out := s.cli("audit", "verify", file, "--key", pub, "--witness-key", lw.VKey)
	if !strings.Contains(out, "witnessed by "+witnesstest.Name) {
		t.Fatalf("verify with the witness key: %s", out)
	}
	stranger, _ := torchwood.NewCosignatureSigner(witnesstest.Name, ed25519.NewKeyFromSeed(make([]byte, 32)))
	if err := s.cliErr("audit", "verify", file, "--key", pub, "--witness-key", stranger.Verifier().String()); err == nil || !strings.Contains(err.Error(), "cosigned by 0 of the 1") {
		t.Fatalf("verify with another witness key: %v", err)
	}
	prev := filepath.Join(t.TempDir(), "witnessed.txt")
	if err := os.WriteFile(prev, witnessedNote, 0o600); err != nil {
		t.Fatal(err)
	}
	out = s.cli("audit", "verify", file, "--key", pub, "--witness-key", lw.VKey, "--previous", prev)
	if !strings.Contains(out, "consistent with the previous checkpoint") {
		t.Fatalf("verify --previous WITNESSED: %s", out)
	}

	// The bad day: the database comes back from the older copy, and so
	// do the cosigned checkpoints kept in it. The witness remembers.
	copyDB(t, backup, s.cfg.Server.DataDir)
	restored := len(s.exportAndVerify().entries)
	cmd := s.serveCmd(nil)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("serve on a rolled-back log started:\n%s", stderr.String())
	} else if _, ok := err.(*exec.ExitError); !ok {
		t.Fatal(err)
	}
	for _, want := range []string{"rolled back", witnesstest.Name, "tree size " + strconv.FormatInt(witnessedSize, 10),
		"tree size " + strconv.Itoa(restored), "--accept-rollback"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, stderr.String())
		}
	}

	n = s.startWith([]string{"--accept-rollback"})
	servertest.CallTool(t, n.agent(), "get_balance", map[string]any{})
	// The witness will never cosign this history: /readyz fails on it.
	code, body := getWithHost(t, n.base()+"/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "FAIL  witness "+witnesstest.Name+": refuses the log") {
		t.Fatalf("/readyz after an accepted rollback: %d\n%s", code, body)
	}
	n.term()
	accepted := 0
	for _, e := range s.exportAndVerify().entries {
		if e.Kind == vocab.KindRollbackAccepted {
			accepted++
			if !strings.Contains(e.Reason, witnesstest.Name) || !strings.Contains(e.Reason, "tree size "+strconv.FormatInt(witnessedSize, 10)) {
				t.Errorf("the accepted rollback does not say what was lost: %q", e.Reason)
			}
		}
	}
	if accepted != 1 {
		t.Errorf("%d audit.rollback_accepted entries, want 1", accepted)
	}
}

// base is the agent listener's root URL (it serves /readyz and /metrics
// too).
func (n *node) base() string { return strings.TrimSuffix(n.mcp, "/mcp") }

// waitReady polls /readyz until it answers 200 with a body ok accepts.
func waitReady(t *testing.T, n *node, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		code, body := getWithHost(t, n.base()+"/readyz", "")
		if code == http.StatusOK && ok(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never became what the test waits for: %d\n%s\n%s", code, body, n.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exportFile exports the site's log into a file and returns its name.
func (s *site) exportFile() string {
	s.t.Helper()
	file := filepath.Join(s.t.TempDir(), "export.jsonl")
	s.cli("audit", "export", "--out", file)
	return file
}

// cliErr runs a countersign command that may fail; the error carries
// stderr.
func (s *site) cliErr(args ...string) error {
	cmd := exec.Command(binPath, append(args, "--config", s.path)...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &cliError{err, string(out)}
	}
	return nil
}

type cliError struct {
	err error
	out string
}

func (e *cliError) Error() string { return e.err.Error() + ": " + e.out }

// witnessedIn returns the cosigned checkpoint an export carries.
func witnessedIn(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var w struct {
			Witnessed string `json:"witnessed"`
		}
		if json.Unmarshal(line, &w) == nil && w.Witnessed != "" {
			return []byte(w.Witnessed)
		}
	}
	t.Fatalf("%s carries no witnessed checkpoint", file)
	return nil
}
