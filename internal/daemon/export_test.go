package daemon

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/audit/feed/feedtest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
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
