package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/vocab"
)

// TestAuditTailOCSF follows the log with --format ocsf: one OCSF API
// Activity event per entry, in order, each naming the entry's seq and
// hash and a signed checkpoint that covers it.
func TestAuditTailOCSF(t *testing.T) {
	s := newSite(t, nil)
	db, log, err := daemon.OpenAudit(context.Background(), s.cfg, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []audit.Entry{
		{Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "get_balance", Decision: "low", Args: json.RawMessage(`{"account":"ops"}`)},
		{Kind: vocab.KindCallExecuted, Agent: "agent-1", Tool: "get_balance", Decision: "low", ArgsSeq: 1, Result: json.RawMessage(`{"balance":"1"}`)},
		{Kind: vocab.KindCallDenied, Agent: "agent-2", Tool: "transfer", Decision: "deny", Reason: "policy says no"},
	} {
		if _, err := log.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	log.Close()
	db.Close()
	export := filepath.Join(t.TempDir(), "export.jsonl")
	s.cli("audit", "export", "--out", export)
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	var entries []audit.Entry
	for line := range strings.SplitSeq(strings.TrimSpace(string(raw)), "\n") {
		if strings.HasPrefix(line, `{"checkpoint"`) {
			continue
		}
		var e audit.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		t.Fatal("the export has no entries to follow")
	}

	cmd := exec.Command(binPath, "audit", "tail", "--since", "0", "--format", "ocsf", "--interval", "20ms", "--config", s.path)
	cmd.Dir = repoRoot
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	for i, want := range entries {
		if !lines.Scan() {
			t.Fatalf("tail ended after %d events: %v", i, lines.Err())
		}
		var ev feed.Event
		dec := json.NewDecoder(strings.NewReader(lines.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("line %d is not an OCSF event: %v\n%s", i+1, err, lines.Text())
		}
		in := ev.Unmapped.Countersign
		if ev.ClassUID != 6003 || ev.Metadata.Version != feed.OCSFVersion || ev.Metadata.EventCode != string(want.Kind) ||
			in.Seq != want.Seq || in.Hash != want.Hash || in.PrevHash != want.PrevHash {
			t.Errorf("event %d: class %d, version %s, code %s, integrity seq %d hash %s; want the export's seq %d hash %s kind %s",
				i+1, ev.ClassUID, ev.Metadata.Version, ev.Metadata.EventCode, in.Seq, in.Hash, want.Seq, want.Hash, want.Kind)
		}
		if in.Checkpoint == nil || in.Checkpoint.Size < want.Seq {
			t.Errorf("event %d: checkpoint %+v does not cover seq %d", i+1, in.Checkpoint, want.Seq)
		} else if size, ok := audit.CheckpointSize([]byte(in.Checkpoint.Note)); !ok || size != in.Checkpoint.Size {
			t.Errorf("event %d: the checkpoint note says size %d (%v), the event %d", i+1, size, ok, in.Checkpoint.Size)
		}
	}
}

func TestAuditTailRefusesAnUnknownFormat(t *testing.T) {
	s := newSite(t, nil)
	cmd := exec.Command(binPath, "audit", "tail", "--format", "cef", "--config", s.path)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--format "cef": expected text or ocsf`) {
		t.Fatalf("tail --format cef: %v\n%s", err, out)
	}
}
