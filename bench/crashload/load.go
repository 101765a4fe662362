package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options shape one load run.
type Options struct {
	Bin       string        // the countersign binary
	Root      string        // the repository (deploy script and secrets)
	Dir       string        // data directory and config; created empty
	Sessions  int           // concurrent agent sessions
	Duration  time.Duration // total load time
	KillAfter time.Duration // when the server is SIGKILLed (once)
	Log       io.Writer     // progress; the servers' stderr goes to Dir
}

// Report is what a run did and what it found wrong.
type Report struct {
	Calls, Acked, Approved, Denied int64
	Transfers                      int
	Entries                        int
	Violations                     []string
}

const origin = "http://localhost:8710"

// Run drives a server with mixed calls from Sessions agents while an
// approver approves or denies every request with a software key, SIGKILLs
// it once, starts it again on the same data directory, stops it with
// SIGTERM at the end, and checks what a crash must never break.
func Run(ctx context.Context, o Options) (*Report, error) {
	r := &run{o: o, rep: &Report{}, acked: map[string]bool{}}
	if err := r.configure(); err != nil {
		return nil, err
	}
	srv, err := r.start()
	if err != nil {
		return nil, err
	}
	if err := r.enroll(srv); err != nil {
		srv.kill()
		return nil, err
	}
	deadline := time.Now().Add(o.Duration)
	kill := time.Now().Add(o.KillAfter)
	for _, phase := range []time.Time{kill, deadline} {
		r.load(ctx, srv, phase)
		if phase == kill {
			fmt.Fprintf(o.Log, "SIGKILL after %d calls\n", r.rep.Calls)
			srv.kill()
			if srv, err = r.start(); err != nil {
				return nil, err
			}
		}
	}
	fmt.Fprintf(o.Log, "SIGTERM after %d calls\n", r.rep.Calls)
	if err := srv.term(); err != nil {
		return nil, err
	}
	return r.rep, r.check()
}

type run struct {
	o       Options
	rep     *Report
	cfgPath string
	dataDir string
	key     *approvaltest.SoftKey
	mu      sync.Mutex
	acked   map[string]bool // transfer ids agents were told about
	starts  int
}

func (r *run) configure() error {
	c, err := config.Parse(countersign.DefaultConfig(), "crashload")
	if err != nil {
		return err
	}
	r.dataDir = filepath.Join(r.o.Dir, "data")
	c.Server.DataDir = r.dataDir
	c.Server.ShutdownTimeout = 20 * time.Second
	c.Approval.Listen = "127.0.0.1:0"
	c.Approval.PublicURL, c.Approval.Origins = origin, []string{origin}
	c.Approval.AllowedHosts = []string{"localhost:8710"}
	c.Approval.PollInterval = time.Second
	c.Deploy.Command[0] = filepath.Join(r.o.Root, c.Deploy.Command[0])
	c.Secrets.Dir = filepath.Join(r.o.Root, c.Secrets.Dir)
	c.Audit.CheckpointEvery = 2 * time.Second
	// Every session is the same anonymous agent, and the load is on
	// purpose: lift the per-agent caps a runaway agent would meet.
	c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
	c.Limits.PendingPerAgent, c.Limits.PendingTotal = 100_000, 100_000
	// Payments wait in poll mode, production deploys in block mode: a kill
	// finds both kinds waiting.
	t := c.Tools["transfer"]
	t.Wait = "poll"
	c.Tools["transfer"] = t
	raw, err := config.Encode(c)
	if err != nil {
		return err
	}
	r.cfgPath = filepath.Join(r.o.Dir, "mcp.yaml")
	return os.WriteFile(r.cfgPath, raw, 0o600)
}

// server is one process.
type server struct {
	cmd  *exec.Cmd
	done chan error
	mcp  string
	page *approvaltest.Page
}

func (r *run) start() (*server, error) {
	r.starts++
	logf, err := os.Create(filepath.Join(r.o.Dir, fmt.Sprintf("serve-%d.log", r.starts)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.o.Bin, "serve", "--http", "127.0.0.1:0", "--config", r.cfgPath, "--log-format", "json")
	cmd.Dir = r.o.Root
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(logf, pw)
	s := &server{cmd: cmd, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { err := cmd.Wait(); pw.Close(); logf.Close(); s.done <- err }()
	ready := make(chan error, 1)
	go func() {
		var pageAddr string
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line["msg"] {
			case "approver page":
				pageAddr, _ = line["listen"].(string)
			case "serving MCP over HTTP":
				s.mcp, _ = line["streamable"].(string)
				s.page = approvaltest.NewPage(pageAddr, origin)
				ready <- nil
				io.Copy(io.Discard, pr)
				return
			}
		}
		ready <- errors.New("countersign exited before serving; see " + logf.Name())
	}()
	select {
	case err := <-ready:
		return s, err
	case <-time.After(60 * time.Second):
		s.kill()
		return nil, errors.New("countersign did not start within 60s")
	}
}

func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (s *server) term() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err
	case <-time.After(60 * time.Second):
		s.kill()
		return errors.New("countersign still running 60s after SIGTERM")
	}
}

func (r *run) cli(args ...string) (string, error) {
	cmd := exec.Command(r.o.Bin, append(args, "--config", r.cfgPath)...)
	cmd.Dir = r.o.Root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("countersign %v: %v: %s", args, err, errb.String())
	}
	return out.String(), nil
}

// enroll gives alice (who may approve everything) a software key.
func (r *run) enroll(s *server) error {
	key, err := approvaltest.NewKey("localhost", origin)
	if err != nil {
		return err
	}
	link, err := r.cli("approvers", "enroll", "alice")
	if err != nil {
		return err
	}
	if err := s.page.Enroll(strings.TrimSpace(link), key); err != nil {
		return err
	}
	r.key = key
	return nil
}

// load runs the sessions and the approver until the deadline.
func (r *run) load(ctx context.Context, s *server, until time.Time) {
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	var wg sync.WaitGroup
	for i := range r.o.Sessions {
		wg.Go(func() { r.session(ctx, s, i) })
	}
	wg.Go(func() { r.approver(ctx, s) })
	wg.Wait()
}

// session is one agent: mixed routine reads and writes, payments that
// need approval (poll mode), and polls of its pending requests.
func (r *run) session(ctx context.Context, s *server, n int) {
	client := sdk.NewClient(&sdk.Implementation{Name: "crashload", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: s.mcp, MaxRetries: -1}, nil)
	if err != nil {
		return
	}
	defer cs.Close()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(time.Now().UnixNano())))
	var pending []string
	for i := 0; ctx.Err() == nil; i++ {
		var name string
		var args map[string]any
		switch p := rng.IntN(100); {
		case p < 45:
			name, args = "transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 0.01, "currency": "USD",
				"memo": fmt.Sprintf("load %d/%d", n, i)}
		case p < 55:
			name, args = "transfer", map[string]any{"from": "operating", "to": fmt.Sprintf("Vendor %d", rng.IntN(5)), "amount": 20000, "currency": "USD"}
		case p < 65:
			name, args = "deploy", map[string]any{"service": "api", "version": fmt.Sprintf("1.%d.%d", n, i), "environment": "staging"}
		case p < 70:
			name, args = "deploy", map[string]any{"service": "web", "version": fmt.Sprintf("2.%d.%d", n, i), "environment": "production"}
		case p < 80:
			name, args = "read_secret", map[string]any{"name": "staging-db-password"}
		case p < 90 && len(pending) > 0:
			name, args = "approval_status", map[string]any{"auth_req_id": pending[rng.IntN(len(pending))]}
		default:
			name, args = "get_balance", map[string]any{}
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := cs.CallTool(cctx, &sdk.CallToolParams{Name: name, Arguments: args})
		cancel()
		if err != nil {
			return // the server died or the phase ended; a new session follows
		}
		atomic.AddInt64(&r.rep.Calls, 1)
		if res.IsError {
			continue
		}
		var out struct {
			Status     string `json:"status"`
			ID         string `json:"auth_req_id"`
			TransferID string `json:"transfer_id"`
			Replay     bool   `json:"idempotent_replay"`
		}
		text := ""
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				text += tc.Text
			}
		}
		if json.Unmarshal([]byte(text), &out) != nil {
			continue
		}
		if out.Status == "authorization_pending" && name != "approval_status" {
			pending = append(pending, out.ID)
		}
		if out.TransferID != "" {
			atomic.AddInt64(&r.rep.Acked, 1)
			r.mu.Lock()
			r.acked[out.TransferID] = true
			r.mu.Unlock()
		}
	}
}

// approver decides every pending request: mostly approve, some deny.
func (r *run) approver(ctx context.Context, s *server) {
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	for ctx.Err() == nil {
		ids, err := s.page.Pending()
		if err != nil {
			return
		}
		for _, id := range ids {
			decision := vocab.Approve
			if rng.IntN(5) == 0 {
				decision = vocab.Deny
			}
			if _, err := s.page.Decide(id, string(decision), r.key); err == nil {
				if decision == vocab.Approve {
					atomic.AddInt64(&r.rep.Approved, 1)
				} else {
					atomic.AddInt64(&r.rep.Denied, 1)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// check verifies the export with the CLI and holds the ledger against it.
func (r *run) check() error {
	export := filepath.Join(r.o.Dir, "export.jsonl")
	if _, err := r.cli("audit", "export", "--out", export); err != nil {
		return err
	}
	pub, err := r.cli("audit", "pubkey")
	if err != nil {
		return err
	}
	if out, err := r.cli("audit", "verify", export, "--key", strings.TrimSpace(pub)); err != nil {
		r.violation("audit verify: %v", err)
	} else {
		fmt.Fprint(r.o.Log, out)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		return err
	}
	executed := map[string]int{}
	open := map[string]int{}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		var e audit.Entry
		if json.Unmarshal(line, &e) != nil || e.Kind == "" {
			continue
		}
		r.rep.Entries++
		if e.Kind == vocab.KindCallExecuted && e.Tool == "transfer" {
			var rec struct {
				TransferID string `json:"transfer_id"`
				Replay     bool   `json:"idempotent_replay"`
			}
			if json.Unmarshal(e.Result, &rec) == nil && !rec.Replay {
				executed[rec.TransferID]++
			}
		}
		if e.RequestID == "" {
			k := e.Agent + "\x00" + e.Tool + "\x00" + e.ArgsSHA256
			switch e.Kind {
			case vocab.KindCallAllowed:
				open[k]++
			case vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted:
				open[k]--
			}
		}
	}
	// A pure read has only its outcome (recorded once, after it ran).
	for k, n := range open {
		if n > 0 {
			r.violation("%d routine calls of %q without an outcome", n, strings.ReplaceAll(k, "\x00", " "))
		}
	}
	db, err := store.Open(context.Background(), filepath.Join(r.dataDir, store.FileName))
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, COALESCE(call_id, '') FROM ledger_transfers`)
	if err != nil {
		return err
	}
	calls := map[string]int{}
	ledger := map[string]bool{}
	for rows.Next() {
		var id, call string
		if err := rows.Scan(&id, &call); err != nil {
			rows.Close()
			return err
		}
		ledger[id] = true
		calls[call]++
		if executed[id] != 1 {
			r.violation("transfer %s (call %s) has %d call.executed entries", id, call, executed[id])
		}
	}
	rows.Close()
	r.rep.Transfers = len(ledger)
	for id := range executed {
		if !ledger[id] {
			r.violation("the log records transfer %s, which the ledger does not hold", id)
		}
	}
	for call, n := range calls {
		if n > 1 {
			r.violation("call %s paid %d times", call, n)
		}
	}
	for id := range r.acked {
		if !ledger[id] {
			r.violation("acknowledged transfer %s is not in the ledger", id)
		}
	}
	var approvable int
	if err := db.QueryRow(`SELECT COUNT(*) FROM approval_requests WHERE state = 'pending' AND wait_mode = 'block'`).Scan(&approvable); err != nil {
		return err
	}
	if approvable > 0 {
		r.violation("%d block-mode requests are still approvable after the run", approvable)
	}
	return nil
}

func (r *run) violation(format string, args ...any) {
	r.rep.Violations = append(r.rep.Violations, fmt.Sprintf(format, args...))
}
