// Command crashload is a load test with a crash in the middle: N agent
// sessions make mixed calls (routine transfers, deploys and secret reads,
// payments that need an approval in poll mode, production deploys that
// wait in block mode, approval_status polls) while an approver approves
// or denies every request through the real approver page with a software
// security key. The server is SIGKILLed once, started again on the same
// data directory, and stopped with SIGTERM at the end. Then the export must
// verify, every transfer in the ledger must have exactly one call.executed
// entry, every routine call exactly one outcome, every transfer an agent
// was told about must be in the ledger, no call may have paid twice, and no
// block-mode request may be left approvable.
//
//	go build -o /tmp/countersign ./cmd/countersign
//	go run ./bench/crashload -bin /tmp/countersign -sessions 16 -duration 60s
//
// It exits 1 when anything does not hold. A short run is part of the test
// suite (load_test.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	bin := flag.String("bin", "", "the countersign binary (required)")
	root := flag.String("root", ".", "the repository root (for testdata/deploy.sh and testdata/secrets)")
	sessions := flag.Int("sessions", 8, "concurrent agent sessions")
	duration := flag.Duration("duration", 30*time.Second, "how long the load runs")
	killAfter := flag.Duration("kill-after", 0, "when to SIGKILL the server (default: half the duration)")
	dir := flag.String("dir", "", "where to keep the data, config, logs and export (default: a new temporary directory)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "crashload: -bin is required (go build -o /tmp/countersign ./cmd/countersign)")
		os.Exit(2)
	}
	if *killAfter == 0 {
		*killAfter = *duration / 2
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "crashload-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "crashload:", err)
			os.Exit(1)
		}
		*dir = d
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	rep, err := Run(context.Background(), Options{
		Bin: abs(*bin), Root: abs(*root), Dir: *dir, Sessions: *sessions,
		Duration: *duration, KillAfter: *killAfter, Log: os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashload:", err)
		os.Exit(1)
	}
	fmt.Printf("%d calls, %d transfers acknowledged, %d in the ledger, %d approved, %d denied, %d audit entries (data in %s)\n",
		rep.Calls, rep.Acked, rep.Transfers, rep.Approved, rep.Denied, rep.Entries, *dir)
	for _, v := range rep.Violations {
		fmt.Println("VIOLATION:", v)
	}
	if len(rep.Violations) > 0 {
		os.Exit(1)
	}
}
