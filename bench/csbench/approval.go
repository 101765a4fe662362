package main

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	nd, err := startNode(ctx, work, bin, nil)
	if err != nil {
		return err
	}
	defer nd.stop()
	key, err := nd.enroll(bin)
	if err != nil {
		return err
	}
	taps, err := approvals(ctx, nd, nd, key, n, "Bench payee")
	if err != nil {
		return err
	}
	l := percentiles(tapToResult(taps))
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p50_ms", l.p50)
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p99_ms", l.p99)
	return nil
}

// node is one `countersign serve --http` with its approver page.
type node struct {
	*server
	dir    string   // its data directory
	page   string   // the approver page's host:port
	origin string   // the page's origin, as a browser on it sends
	env    []string // what serve runs with; admin commands run with it too
	key    *approvaltest.SoftKey
}

// startNode starts serve on a data directory of its own, with env added
// to csbench's usual environment.
func startNode(ctx context.Context, work, bin string, env []string) (*node, error) {
	nd := &node{page: freeAddr()}
	_, port, _ := net.SplitHostPort(nd.page)
	nd.origin = "http://localhost:" + port
	srv, err := startHTTP(ctx, work, func(dir, addr string) *exec.Cmd {
		nd.dir, nd.env = dir, append(countersignEnv(dir, nd.page), env...)
		cmd := exec.Command(bin, "serve", "--http", addr)
		cmd.Env = nd.env
		return cmd
	})
	if err != nil {
		return nil, err
	}
	nd.server = srv
	return nd, nil
}

// enroll enrolls approver alice's software key on the node's page.
func (nd *node) enroll(bin string) (*approvaltest.SoftKey, error) {
	enroll := exec.Command(bin, "approvers", "enroll", "alice")
	enroll.Env = nd.env
	link, err := enroll.Output()
	if err != nil {
		return nil, fmt.Errorf("approvers enroll: %w", err)
	}
	key, err := approvaltest.NewKey("localhost", nd.origin)
	if err != nil {
		return nil, err
	}
	if err := approvaltest.NewPage(nd.page, nd.origin).Enroll(strings.TrimSpace(string(link)), key); err != nil {
		return nil, err
	}
	return key, nil
}

// approved is one request approved by approvals.
type approved struct {
	id            string
	tap, returned time.Time // the tap's first request sent; the waiting call's result received
}

func tapToResult(as []approved) []time.Duration {
	d := make([]time.Duration, len(as))
	for i, a := range as {
		d[i] = a.returned.Sub(a.tap)
	}
	return d
}

// approvals makes n high-risk calls, one at a time, on caller's first
// session, and approves each on tapper's page with key. caller and
// tapper are the same node, or two replicas on one database.
func approvals(ctx context.Context, caller, tapper *node, key *approvaltest.SoftKey, n int, payee string) ([]approved, error) {
	key.Origin = tapper.origin
	pg := approvaltest.NewPage(tapper.page, tapper.origin)
	// The page limits taps per client address; spread the approver's taps
	// over loopback addresses so the limit is not what is measured.
	var taps []*approvaltest.Page
	for i := range 64 {
		taps = append(taps, approvaltest.NewPageFrom(tapper.page, tapper.origin, net.IPv4(127, 0, 1, byte(i+1))))
	}
	out := make([]approved, 0, n)
	for i := range n {
		// A payee the ledger does not know: each call needs a human, and
		// the amounts stay far below the daily sums that would need two.
		done := make(chan error, 1)
		var returned time.Time
		go func() {
			err := call{"transfer", map[string]any{"from": "operating", "to": fmt.Sprintf("%s %d", payee, i),
				"amount": 1, "currency": "USD"}}.do(ctx, caller.session)
			returned = time.Now()
			done <- err
		}()
		var id string
		for deadline := time.Now().Add(30 * time.Second); id == "" && time.Now().Before(deadline); {
			ids, err := pg.Pending()
			if err != nil {
				return nil, err
			}
			if len(ids) > 0 {
				id = ids[0]
				break
			}
			time.Sleep(time.Millisecond)
		}
		if id == "" {
			return nil, errors.New("no request appeared on the page")
		}
		tap := time.Now()
		if _, err := taps[i%len(taps)].Decide(id, string(vocab.Approve), key); err != nil {
			return nil, err
		}
		if err := <-done; err != nil {
			return nil, fmt.Errorf("approved transfer: %w", err)
		}
		out = append(out, approved{id, tap, returned})
	}
	return out, nil
}
