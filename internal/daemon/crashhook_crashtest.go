//go:build crashtest

package daemon

import (
	"context"
	"os"
	"path/filepath"

	"github.com/countersign/countersign/tools"
)

// crashHooks, in a binary built for the crash tests only, holds a tool's
// call between the backend's commit and the guard's record, so that a
// test can SIGKILL the process exactly there: with
// COUNTERSIGN_CRASHTEST_HOLD=transfer, every successful transfer run writes
// its call id to $COUNTERSIGN_CRASHTEST_DIR/held and then never returns.
func crashHooks(cat *tools.Catalog) {
	name, dir := os.Getenv("COUNTERSIGN_CRASHTEST_HOLD"), os.Getenv("COUNTERSIGN_CRASHTEST_DIR")
	if name == "" || dir == "" {
		return
	}
	spec, ok := cat.Lookup(name)
	if !ok {
		return
	}
	run := spec.Run
	spec.Run = func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
		res, err := run(ctx, call)
		if err != nil {
			return res, err
		}
		os.WriteFile(filepath.Join(dir, "held"), []byte(call.ID), 0o600)
		select {} // until the test kills the process
	}
}
