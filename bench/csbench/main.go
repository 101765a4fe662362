// Command csbench measures Countersign against a bare MCP server in one run
// on one machine, and prints ratios first, then absolute figures.
//
//	go run ./bench/csbench [-short] [-only calls,replicas,...] [-also OLD-BINARY] [-out bench-results.json]
//
// It builds the countersign binary and the baseline (bench/baseline: a bare
// mcp-go server with the same ledger tools, no policy, no audit), starts
// each on 127.0.0.1, and drives both with the same official go-sdk client:
//
//   - routine call (get_balance) over Streamable HTTP and stdio: p50/p99
//     latency with one caller; throughput with 1, 16 and 64 concurrent
//     callers (HTTP: one session each; stdio: concurrent calls on the one
//     session a stdio server has); and the server process's CPU time per
//     routine call at 16 HTTP sessions (cpu.go);
//   - small transfers (low risk, they write) at 16, 200 and 400 concurrent
//     sessions: throughput, p99, errors;
//   - machine-side approval latency: from a software key's tap reaching
//     the approver page to the result reaching the waiting agent;
//   - memory: Countersign's RSS with N calls waiting for approval, and with
//     N poll-mode requests pending;
//   - micro benchmarks (go test -bench): policy decision, digest, audit
//     append at 1 and 64 writers, and the physical references (Ed25519
//     sign/verify, one durable SQLite commit);
//   - replicas (issue 24): serve replicas on one PostgreSQL database beside
//     one process on SQLite, in the same run: audit append at 64 writers
//     on one log and on three (lock wait and hold per batch), a
//     usage-reading call's latency, 800 small transfers at 400 sessions on
//     one replica and over three, and an approval tapped on another
//     replica's page than the one where the call waits (replicas.go).
//
// With -also, a second, prebuilt countersign binary (say, built from main
// before a change) runs the same calls and cpu groups as targets
// "countersign -also" and "countersign -also sync=normal", driven by the
// same client in the same run, so a change is judged by a ratio measured
// under the same load (the "÷ -also" column).
//
// The same figures are written as JSON to -out for comparison between runs.
// Everything it starts listens on 127.0.0.1 and stops when it ends.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	short := flag.Bool("short", false, "a quick run that only checks the suite works (CI)")
	out := flag.String("out", "bench-results.json", "where to write the results as JSON")
	only := flag.String("only", "", "run only these groups, comma-separated: cpu, calls, approval, memory, micro, replicas (default: all)")
	also := flag.String("also", "", "a second, prebuilt countersign binary (e.g. built from main) whose routine calls are measured in the same run, as targets \"countersign -also\" and \"countersign -also sync=normal\"")
	rounds := flag.Int("rounds", 0, "rounds of the cpu group (default 5; 1 with -short)")
	flag.Parse()
	groups := map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		switch g = strings.TrimSpace(g); g {
		case "":
		case "cpu", "calls", "approval", "memory", "micro", "replicas":
			groups[g] = true
		default:
			fmt.Fprintf(os.Stderr, "csbench: -only: unknown group %q (expected cpu, calls, approval, memory, micro or replicas)\n", g)
			os.Exit(2)
		}
	}
	want := func(g string) bool { return len(groups) == 0 || groups[g] }
	if err := run(*short, *out, *also, *rounds, want); err != nil {
		fmt.Fprintln(os.Stderr, "csbench:", err)
		os.Exit(1)
	}
}

// sizes scale the run; -short shrinks them so CI only checks it works.
type sizes struct {
	approvals    int
	latencyCalls int
	window       time.Duration
	transfers    int
	waiting      int
	pending      int
	benchtime    string
	cpuCalls     int
	cpuRounds    int
}

// target is one server under test, started by cmd with its own data
// directory and, for HTTP, its listen address ("" for stdio).
type target struct {
	name string
	cmd  func(dir, addr string) *exec.Cmd
}

func run(short bool, outPath, also string, rounds int, want func(group string) bool) error {
	sz := sizes{approvals: 1000, latencyCalls: 2000, window: 5 * time.Second, transfers: 800, waiting: 1000, pending: 10000, benchtime: "1s", cpuCalls: 4000, cpuRounds: 5}
	if short {
		sz = sizes{approvals: 5, latencyCalls: 50, window: 300 * time.Millisecond, transfers: 40, waiting: 20, pending: 50, benchtime: "1x", cpuCalls: 50, cpuRounds: 1}
	}
	if rounds > 0 {
		sz.cpuRounds = rounds
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "csbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cs, base := filepath.Join(work, "countersign"), filepath.Join(work, "baseline")
	for bin, pkg := range map[string]string{cs: "./cmd/countersign", base: "./bench/baseline"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Dir, build.Stderr = root, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}

	r := &report{Machine: machine(), Started: time.Now().UTC().Format(time.RFC3339)}
	ctx := context.Background()
	get := call{"get_balance", map[string]any{"account": "operating"}}
	transfer := call{"transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}}

	targets := []target{
		{"baseline", func(dir, addr string) *exec.Cmd {
			args := []string{"-data", dir}
			if addr != "" {
				args = append(args, "-http", addr)
			}
			return exec.Command(base, args...)
		}},
		{"countersign", func(dir, addr string) *exec.Cmd { return countersign(cs, dir, addr, nil) }},
		{"countersign sync=normal", func(dir, addr string) *exec.Cmd {
			return countersign(cs, dir, addr, []string{"COUNTERSIGN_AUDIT_SYNC=normal"})
		}},
	}
	if also != "" {
		if also, err = filepath.Abs(also); err != nil {
			return err
		}
		if _, err := os.Stat(also); err != nil {
			return fmt.Errorf("-also: %w", err)
		}
		targets = append(targets,
			target{alsoOf("countersign"), func(dir, addr string) *exec.Cmd { return countersign(also, dir, addr, nil) }},
			target{alsoOf("countersign sync=normal"), func(dir, addr string) *exec.Cmd {
				return countersign(also, dir, addr, []string{"COUNTERSIGN_AUDIT_SYNC=normal"})
			}})
	}
	if want("cpu") {
		if err := cpuRounds(ctx, r, work, targets, get, sz); err != nil {
			return fmt.Errorf("server CPU: %w", err)
		}
	}
	if !want("calls") {
		targets = nil
	}
	for _, target := range targets {
		// Streamable HTTP.
		srv, err := startHTTP(ctx, work, target.cmd)
		if err != nil {
			return fmt.Errorf("%s over HTTP: %w", target.name, err)
		}
		lat, err := latency(ctx, srv.session, get, sz.latencyCalls)
		if err != nil {
			srv.stop()
			return fmt.Errorf("%s: %w", target.name, err)
		}
		r.add(target.name, "routine call, HTTP, 1 session", "p50_ms", lat.p50)
		r.add(target.name, "routine call, HTTP, 1 session", "p99_ms", lat.p99)
		for _, n := range []int{1, 16, 64} {
			sessions, err := srv.sessions(ctx, n)
			if err != nil {
				srv.stop()
				return err
			}
			tp := throughput(ctx, sessions, get, sz.window)
			name := fmt.Sprintf("routine call, HTTP, %s", plural(n, "session"))
			r.add(target.name, name, "calls_per_s", tp.perSecond)
			r.add(target.name, name, "errors", float64(tp.errors))
			if n == 16 {
				us, _, err := cpuPerCall(ctx, srv, sessions, get, sz.cpuCalls)
				if err != nil {
					srv.stop()
					return fmt.Errorf("%s: server CPU: %w", target.name, err)
				}
				r.add(target.name, "routine call, HTTP, 16 sessions", "server_cpu_us_per_call", us)
			}
		}
		for _, n := range []int{16, 200, 400} {
			sessions, err := srv.sessions(ctx, n)
			if err != nil {
				srv.stop()
				return err
			}
			res := fixedCalls(ctx, sessions, transfer, sz.transfers)
			name := fmt.Sprintf("small transfers, %d sessions", n)
			r.add(target.name, name, "calls_per_s", res.perSecond)
			r.add(target.name, name, "p99_ms", res.p99)
			r.add(target.name, name, "errors", float64(res.errors))
		}
		srv.stop()

		// stdio: one session, concurrent calls on it.
		st, err := startStdio(ctx, work, target.cmd)
		if err != nil {
			return fmt.Errorf("%s over stdio: %w", target.name, err)
		}
		lat, err = latency(ctx, st.session, get, sz.latencyCalls)
		if err != nil {
			st.stop()
			return err
		}
		r.add(target.name, "routine call, stdio, 1 caller", "p50_ms", lat.p50)
		r.add(target.name, "routine call, stdio, 1 caller", "p99_ms", lat.p99)
		for _, n := range []int{1, 16, 64} {
			sessions := make([]*sdk.ClientSession, n)
			for i := range sessions {
				sessions[i] = st.session
			}
			tp := throughput(ctx, sessions, get, sz.window)
			r.add(target.name, fmt.Sprintf("routine call, stdio, %s", plural(n, "caller")), "calls_per_s", tp.perSecond)
		}
		st.stop()
	}

	if want("approval") {
		if err := approvalLatency(ctx, r, work, cs, sz.approvals); err != nil {
			return fmt.Errorf("approval latency: %w", err)
		}
	}
	if want("memory") {
		if err := memory(ctx, r, work, cs, sz); err != nil {
			return err
		}
	}
	if want("micro") {
		if err := micro(r, root, sz.benchtime); err != nil {
			return err
		}
	}
	if want("replicas") {
		if err := replicas(ctx, r, root, work, cs, short); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
	}
	r.print(os.Stdout)
	raw, _ := json.MarshalIndent(r, "", "  ")
	return os.WriteFile(outPath, append(raw, '\n'), 0o644)
}
