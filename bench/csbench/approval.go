package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/vocab"
)

// approvalLatency measures the machine's side of an approval: from the
// approver's tap reaching the page (the ceremony's begin and finish
// requests, signed by a software key) to the tool's result reaching the
// agent whose call waited. The human's time is not in it.
func approvalLatency(ctx context.Context, r *report, work, bin string, n int) error {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return err
	}
	page := freeAddr()
	_, port, _ := net.SplitHostPort(page)
	origin := "http://localhost:" + port
	env := countersignEnv(dir, page)
	srv, err := startHTTP(ctx, work, func(_, addr string) *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--http", addr)
		cmd.Env = env
		return cmd
	})
	if err != nil {
		return err
	}
	defer srv.stop()
	enroll := exec.Command(bin, "approvers", "enroll", "alice")
	enroll.Env = env
	link, err := enroll.Output()
	if err != nil {
		return fmt.Errorf("approvers enroll: %w", err)
	}
	key, err := approvaltest.NewKey("localhost", origin)
	if err != nil {
		return err
	}
	pg := approvaltest.NewPage(page, origin)
	if err := pg.Enroll(strings.TrimSpace(string(link)), key); err != nil {
		return err
	}
	// The page limits taps per client address; spread the approver's taps
	// over loopback addresses so the limit is not what is measured.
	var taps []*approvaltest.Page
	for i := range 64 {
		taps = append(taps, approvaltest.NewPageFrom(page, origin, net.IPv4(127, 0, 1, byte(i+1))))
	}
	d := make([]time.Duration, 0, n)
	for i := range n {
		// A payee the ledger does not know: each call needs a human, and
		// the amounts stay far below the daily sums that would need two.
		done := make(chan error, 1)
		var returned time.Time
		go func() {
			err := call{"transfer", map[string]any{"from": "operating", "to": fmt.Sprintf("Bench payee %d", i),
				"amount": 1, "currency": "USD"}}.do(ctx, srv.session)
			returned = time.Now()
			done <- err
		}()
		var id string
		for deadline := time.Now().Add(30 * time.Second); id == "" && time.Now().Before(deadline); {
			ids, err := pg.Pending()
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				id = ids[0]
				break
			}
			time.Sleep(time.Millisecond)
		}
		if id == "" {
			return errors.New("no request appeared on the page")
		}
		tap := time.Now()
		if _, err := taps[i%len(taps)].Decide(id, string(vocab.Approve), key); err != nil {
			return err
		}
		if err := <-done; err != nil {
			return fmt.Errorf("approved transfer: %w", err)
		}
		d = append(d, returned.Sub(tap))
	}
	l := percentiles(d)
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p50_ms", l.p50)
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p99_ms", l.p99)
	return nil
}
