package daemon

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/audit/feed/feedtest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/vocab"
)

// A daemon with audit.export delivers its log to the OTLP endpoint as
// the leader's duty, every entry once and in order, across a restart,
// and /metrics shows the lag.
func TestServeExportsTheAuditLog(t *testing.T) {
	r := feedtest.NewReceiver(t)
	c := daemontest.Config(t, func(c *config.Config) {
		c.HTTP.Addr = "127.0.0.1:0"
		c.Audit.Export = config.AuditExport{Endpoint: r.URL(), Encoding: "protobuf", BatchSize: 100,
			Timeout: 5 * time.Second, Interval: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond}
	})
	d := startDaemon(t, c, testOptions(t))
	checkBalance(t, streamable(t, c))
	head := waitExported(t, d, r)
	daemontest.WaitFor(t, func() bool { // the mark moves just after the receiver answers
		_, body := get(t, "http://"+d.AgentAddr().String()+"/metrics")
		return strings.Contains(body, "countersign_audit_export_lag_entries 0\n")
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	c.HTTP.Addr, c.Approval.Listen = "127.0.0.1:0", "127.0.0.1:0"
	d = startDaemon(t, c, testOptions(t))
	checkBalance(t, streamable(t, c))
	if again := waitExported(t, d, r); again <= head {
		t.Fatalf("no new entries after the restart: head %d, before %d", again, head)
	}
}

// waitExported waits until the receiver holds the whole log, once each
// and in order, and returns the log's last seq.
func waitExported(t *testing.T, d *running, r *feedtest.Receiver) int64 {
	t.Helper()
	head, err := d.Stack().Audit().LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.WaitDistinct(int(head))
	if got := r.Seqs(); !slices.Equal(got[:head], feedtest.UpTo(int(head))) {
		t.Fatalf("received %v, want 1..%d once each, in order", got, head)
	}
	return head
}

// On PostgreSQL only the replica that leads exports; when it stops, the
// next leader goes on from the shared position: together the two
// endpoints hold every seq, in order, none twice.
func TestOnlyTheLeaderExports(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	keyFile := filepath.Join(t.TempDir(), "server.key")
	if _, err := audit.WriteNewKey(keyFile); err != nil {
		t.Fatal(err)
	}
	replica := func(r *feedtest.Receiver) *Stack {
		c := daemontest.Config(t, func(c *config.Config) {
			c.Store.URL, c.Audit.KeyFile = url, keyFile
			c.Audit.Export = config.AuditExport{Endpoint: r.URL(), Encoding: "json", BatchSize: 3,
				Timeout: 5 * time.Second, Interval: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond}
		})
		s, err := Assemble(ctx, c, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ra, rb := feedtest.NewReceiver(t), feedtest.NewReceiver(t)
	a := replica(ra)
	daemontest.WaitFor(t, func() bool { return a.leading.Load() })
	b := replica(rb)
	defer b.Close()
	appendCalls := func(n int) int64 {
		var last int64
		for range n {
			e, err := b.Audit().Append(ctx, audit.Entry{Kind: vocab.KindCallAllowed, Agent: "test", Tool: "get_balance"})
			if err != nil {
				t.Fatal(err)
			}
			last = e.Seq
		}
		return last
	}
	head := appendCalls(10)
	ra.WaitDistinct(int(head))
	if got := rb.Seqs(); len(got) != 0 {
		t.Fatalf("the follower exported %v", got)
	}
	daemontest.WaitFor(t, func() bool { // recorded as delivered: the handover sends nothing twice
		lag, err := feed.Lag(ctx, a.Audit(), a.DB())
		return err == nil && lag == 0
	})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitFor(t, func() bool { return b.leading.Load() })
	head = appendCalls(10)
	daemontest.WaitFor(t, func() bool {
		lag, err := feed.Lag(ctx, b.Audit(), b.DB())
		return err == nil && lag == 0
	})
	got := append(ra.Seqs(), rb.Seqs()...)
	if !slices.Equal(got, feedtest.UpTo(int(head))) {
		t.Fatalf("the two endpoints hold %v (leader %v, then %v), want 1..%d once each", got, ra.Seqs(), rb.Seqs(), head)
	}
}
