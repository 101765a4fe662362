//go:build crashtest

package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/countersign/countersign/tools"
)

// crashHooks, in a binary built for the crash tests only, holds a tool's
// call between the backend's commit and the guard's record, so that a
// test can SIGKILL the process exactly there: with
// COUNTERSIGN_CRASHTEST_HOLD=transfer, every successful transfer run writes
// its call id to $COUNTERSIGN_CRASHTEST_DIR/held and then never returns.
// COUNTERSIGN_CRASHTEST_HOLD_CALLS=request: holds only the calls whose id
// starts so (approved requests' runs), letting routine ones go on: the
// first there after its commit, any later one before it runs (claimed,
// never run), so a kill lands in the middle of a batch.
// COUNTERSIGN_CRASHTEST_HOLD_AT=before holds (and writes held) before the
// backend runs instead: the call was let through (a countersigned one's
// run claimed) and took no effect.
func crashHooks(cat *tools.Catalog) {
	name, dir := os.Getenv("COUNTERSIGN_CRASHTEST_HOLD"), os.Getenv("COUNTERSIGN_CRASHTEST_DIR")
	only := os.Getenv("COUNTERSIGN_CRASHTEST_HOLD_CALLS")
	before := os.Getenv("COUNTERSIGN_CRASHTEST_HOLD_AT") == "before"
	if name == "" || dir == "" {
		return
	}
	spec, ok := cat.Lookup(name)
	if !ok {
		return
	}
	run := spec.Run
	var first atomic.Bool
	spec.Run = func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
		if only != "" && strings.HasPrefix(call.ID, only) && !first.CompareAndSwap(false, true) {
			select {} // until the test kills the process
		}
		if before && strings.HasPrefix(call.ID, only) {
			holdCall(dir, call)
		}
		res, err := run(ctx, call)
		if err != nil || !strings.HasPrefix(call.ID, only) {
			return res, err
		}
		holdCall(dir, call)
		return res, err
	}
}

// holdCall writes the call's id to dir/held and never returns; with
// COUNTERSIGN_CRASHTEST_RELEASE=1, it returns once dir/release exists, so
// a test can change the world (fill the disk) between the backend's
// commit and the record.
func holdCall(dir string, call *tools.Call) {
	os.WriteFile(filepath.Join(dir, "held"), []byte(call.ID), 0o600)
	if os.Getenv("COUNTERSIGN_CRASHTEST_RELEASE") != "1" {
		select {} // until the test kills the process
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
