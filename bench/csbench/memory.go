package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memory measures Countersign's resident set with calls waiting for a
// human (block mode) and with poll-mode requests left pending.
func memory(ctx context.Context, r *report, work, bin string, sz sizes) error {
	big := call{"transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 20000, "currency": "USD"}}
	for _, m := range []struct {
		name string
		n    int
		env  []string
		poll bool
	}{
		{fmt.Sprintf("RSS, %d calls waiting for approval", sz.waiting), sz.waiting, nil, false},
		{fmt.Sprintf("RSS, %d poll-mode requests pending", sz.pending), sz.pending, []string{"COUNTERSIGN_TOOLS_TRANSFER_WAIT=poll"}, true},
	} {
		srv, err := startHTTP(ctx, work, func(dir, addr string) *exec.Cmd { return countersign(bin, dir, addr, m.env) })
		if err != nil {
			return err
		}
		idle := rss(srv.cmd.Process.Pid)
		sessions, err := srv.sessions(ctx, min(m.n, 50))
		if err != nil {
			srv.stop()
			return err
		}
		cctx, cancel := context.WithCancel(ctx)
		var started atomic.Int64
		var wg sync.WaitGroup
		// A block-mode call waits inside its request, so all n are in
		// flight at once. A poll-mode call returns at once: raise them
		// one per session at a time, so the figure is what holding n
		// pending requests costs, not what absorbing n simultaneous HTTP
		// requests does.
		inFlight := make(chan struct{}, m.n)
		if m.poll {
			inFlight = make(chan struct{}, len(sessions))
		}
		for i := range m.n {
			wg.Add(1)
			inFlight <- struct{}{}
			go func() {
				defer wg.Done()
				started.Add(1)
				big.do(cctx, sessions[i%len(sessions)])
				if m.poll {
					<-inFlight
				}
			}()
		}
		// Block-mode calls never return by themselves; wait until the
		// server holds them all (its pending count), then measure.
		waitPending(srv, m.n, 60*time.Second)
		r.add("countersign", m.name, "rss_mb", rss(srv.cmd.Process.Pid))
		r.add("countersign", m.name, "idle_rss_mb", idle)
		cancel()
		wg.Wait()
		srv.stop()
	}
	return nil
}

// waitPending gives the server time to raise n requests; the figure is
// read from its own process, not the client's.
func waitPending(s *server, n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, stable := 0.0, 0
	for time.Now().Before(deadline) && stable < 5 {
		time.Sleep(200 * time.Millisecond)
		now := rss(s.cmd.Process.Pid)
		if now == last {
			stable++
		} else {
			stable = 0
		}
		last = now
	}
}

func rss(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
