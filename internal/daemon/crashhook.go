//go:build !crashtest

package daemon

import "github.com/countersign/countersign/tools"

// crashHooks is empty in every real build; the crash tests build the
// binary with -tags crashtest to get a hook (crashhook_crashtest.go).
func crashHooks(*tools.Catalog) {}
