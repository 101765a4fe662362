package main

// The log keeps bounded, secret-free records of what upstream servers say,
// and a call's arguments once (issue 22, rows 4 and 11).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
	"github.com/countersign/countersign/vocab"
)

func TestGatewayLogKeepsBoundedRecordsOfWhatUpstreamsSay(t *testing.T) {
	up, _ := notesUpstream(t, upstreamtest.EnvRPCError+"=1")
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{up}
		// In the policy document, so that verify --replay-policy replays them.
		c.Tools["notes__rpc_error"] = config.Tool{Level: "low"}
		c.Tools["notes__read_note"] = config.Tool{Level: "low"}
	})
	a := newAgent(t, p)
	secret := upstreamtest.ErrorSecret // said by the upstream, never sent by the agent

	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"a 5 MB JSON-RPC error", map[string]any{"size": 5 << 20}},
		{"a secret past the first KiB of an error", map[string]any{"size": 1500, "secret": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := servertest.CallTool(t, a.cs, "notes__rpc_error", tc.args)
			const prefix = "notes__rpc_error failed: "
			text := servertest.ResultText(res)
			if !res.IsError || !strings.HasPrefix(text, prefix) {
				t.Fatalf("rpc_error: isError=%v %.200q", res.IsError, text)
			}
			whole := strings.TrimPrefix(text, prefix) // the error the gateway got, as it tells the agent
			e := lastEntry(t, p.Audit(), vocab.KindCallFailed)
			if e.Tool != "notes__rpc_error" || len(e.Reason) > audit.MaxText || !strings.HasPrefix(whole, e.Reason) || len(e.Reason) < audit.MaxText-3 {
				t.Fatalf("call.failed of %s keeps a reason of %d bytes, not the first KiB of the error", e.Tool, len(e.Reason))
			}
			sum := sha256.Sum256([]byte(whole))
			if e.ReasonSHA256 != hex.EncodeToString(sum[:]) || e.ReasonSize != int64(len(whole)) {
				t.Fatalf("reason_sha256 %s reason_size %d, want the whole error's %x, %d bytes", e.ReasonSHA256, e.ReasonSize, sum, len(whole))
			}
			if e.ReasonSize < int64(tc.args["size"].(int)) {
				t.Fatalf("reason_size %d, smaller than the upstream's message", e.ReasonSize)
			}
		})
	}

	// 200 calls of a read-only upstream tool with a 60 KB argument: the
	// log keeps the arguments once per call (in call.allowed), and each
	// call's entries add at most perCall bytes besides.
	const calls, argSize, perCall = 200, 60_000, 2048
	name := strings.Repeat("n", argSize)
	before := storedBytes(t, p)
	for range calls {
		if res := servertest.CallTool(t, a.cs, "notes__read_note", map[string]any{"name": name}); res.IsError {
			t.Fatalf("read_note: %.200s", servertest.ResultText(res))
		}
	}
	grew := storedBytes(t, p) - before
	t.Logf("%d calls with a %d-byte argument grew the stored entries by %d bytes (%d a call)", calls, argSize, grew, grew/calls)
	if limit := int64(calls * (argSize + perCall)); grew > limit {
		t.Fatalf("the log grew by %d bytes, over %d: the arguments are stored more than once", grew, limit)
	}
	executed := lastEntry(t, p.Audit(), vocab.KindCallExecuted)
	if len(executed.Args) != 0 || executed.ArgsSeq == 0 {
		t.Fatalf("call.executed stores %d bytes of args, args_seq %d", len(executed.Args), executed.ArgsSeq)
	}

	// The export holds no secret and verifies, policy replay included.
	export, summary := exportAndVerify(t, p)
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), secret) {
		t.Fatal("the secret past the first KiB of the upstream's error is in the export")
	}
	if !strings.HasPrefix(summary, "OK") {
		t.Fatalf("verify: %s", summary)
	}

	// An outcome's args_sha256 changed in the export: verify refuses it
	// at that entry. (A change re-signed with the server key is refused
	// by the args_seq rule: audit's TestVerifyRefusesForgedApprovals.)
	lines := strings.Split(string(raw), "\n")
	changed := false
	for i, l := range lines {
		if at := strings.Index(l, `"args_sha256":"`); at >= 0 && strings.Contains(l, `"kind":"call.executed"`) && strings.Contains(l, `"args_seq":`) {
			at += len(`"args_sha256":"`)
			lines[i] = l[:at] + strings.Repeat("0", 64) + l[at+64:]
			changed = true
			break
		}
	}
	if !changed {
		t.Fatal("no call.executed with args_seq in the export")
	}
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	if err := os.WriteFile(tampered, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "server.pub")
	if err := os.WriteFile(keyFile, []byte(runCLI(t, p.cfg, "audit", "pubkey")), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := cliCommand(p.cfg, "audit", "verify", tampered, "--key", keyFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "hash does not match the entry's content") {
		t.Fatalf("verify of a tampered args_sha256: err %v\n%s", err, out)
	}
}

// lastEntry is the newest entry of kind in the log.
func lastEntry(t *testing.T, l *audit.Log, kind vocab.Kind) audit.Entry {
	t.Helper()
	var last audit.Entry
	for seq := int64(0); ; {
		page, err := l.Since(context.Background(), seq, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if e.Kind == kind {
				last = e
			}
			seq = e.Seq
		}
	}
	if last.Seq == 0 {
		t.Fatalf("no %s in the log", kind)
	}
	return last
}

// storedBytes is the size of the log's stored entries.
func storedBytes(t *testing.T, p *product) int64 {
	t.Helper()
	var n int64
	if err := p.DB().QueryRow(`SELECT COALESCE(SUM(LENGTH(body)), 0) FROM audit_entries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// audit tail shows where an outcome's arguments are, since format 3 stores
// them once.
func TestHumanLineNamesWhereTheArgsAre(t *testing.T) {
	line := humanLine(audit.Entry{Seq: 7, Kind: vocab.KindCallExecuted, Tool: "notes__read_note", ArgsSeq: 6})
	if !strings.Contains(line, "args=(as in #6)") {
		t.Fatalf("line %q does not name the entry holding the args", line)
	}
}
