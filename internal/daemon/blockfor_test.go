package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon/daemontest"
)

// block_for applies when approval_status is offered to collect what a
// call hands over; without it calls wait until decided, and serve says so.
func TestBlockForNeedsApprovalStatus(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	c := daemontest.Config(t, func(c *config.Config) { c.Approval.BlockFor = 7 * time.Second })
	if got := blockFor(c, log); got != 7*time.Second || logged.Len() != 0 {
		t.Errorf("with approval_status: block_for %v, logged %q", got, logged.String())
	}
	delete(c.Tools, "approval_status")
	if got := blockFor(c, log); got != 0 || !strings.Contains(logged.String(), "approval.block_for is not applied: the approval_status tool is not offered") {
		t.Errorf("without approval_status: block_for %v, logged %q", got, logged.String())
	}
}
