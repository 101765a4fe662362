package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
)

// lockedBuffer is a log the daemon writes from its goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serve says at start, and /readyz says while it lasts (staying ready),
// which tools' approvers with an enrolled key are fewer than a quorum the
// tool can need; enrolling a key changes what /readyz says.
func TestServeAndReadyzNameQuorumsKeysCannotMeet(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.Addr().(*net.TCPAddr).Port
	free.Close()
	origin := fmt.Sprintf("http://localhost:%d", port)
	c := daemontest.Config(t, func(c *config.Config) {
		c.Approval.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.Approval.PublicURL, c.Approval.Origins = origin, []string{origin}
		c.Approval.AllowedHosts, c.Approval.RPID = []string{fmt.Sprintf("localhost:%d", port)}, "localhost"
		c.HTTP.Addr = "127.0.0.1:0" // not stdio, which ends with the test's stdin
	})
	var logged lockedBuffer
	d := startDaemon(t, c, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil)), Version: "test"})
	readyz := "http://" + d.PageAddr().String() + "/readyz"

	// The shipped mcp.yaml: alice (treasury, ops, security) and bob
	// (treasury), neither with a key yet.
	transferShort := "WARN  quorum transfer: tools.transfer.rules[1].quorum needs 2 of tools.transfer.approvers (alice, bob); "
	daemontest.WaitFor(t, func() bool { return strings.Contains(logged.String(), "tool=transfer") })
	for _, want := range []string{
		`level=WARN msg="too few approvers with an enrolled, unrevoked key to meet a quorum: its calls wait until more enroll (countersign approvers enroll ID)" tool=transfer quorum=2 from=tools.transfer.rules[1].quorum approvers=tools.transfer.approvers with_key=0`,
		`tool=deploy quorum=1 from=tools.deploy.rules[0].level approvers=tools.deploy.approvers with_key=0`,
	} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the log lacks\n%s\n%s", want, logged.String())
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logged.String())
		}
	})
	code, body := get(t, readyz)
	for _, want := range []string{
		transferShort + "0 with an enrolled, unrevoked key (none); still to enroll: alice, bob\n",
		"WARN  quorum deploy: tools.deploy.rules[0].level needs 1 of tools.deploy.approvers (alice); 0 with an enrolled, unrevoked key (none); still to enroll: alice\n",
	} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("/readyz with no key: %d\n%s\nwant\n%s", code, body, want)
		}
	}

	link, err := d.Stack().Approvals().CreateEnrollment(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := approvaltest.NewPage(d.PageAddr().String(), origin).Enroll(link, approvaltest.NewSoftKey(t, "localhost", origin)); err != nil {
		t.Fatal(err)
	}
	code, body = get(t, readyz)
	if want := transferShort + "1 with an enrolled, unrevoked key (alice); still to enroll: bob\n"; code != http.StatusOK || !strings.Contains(body, want) {
		t.Errorf("/readyz with alice's key: %d\n%s\nwant\n%s", code, body, want)
	}
	if strings.Contains(body, "quorum deploy") || strings.Contains(body, "quorum read_secret") {
		t.Errorf("/readyz names tools alice's key now serves:\n%s", body)
	}
}
