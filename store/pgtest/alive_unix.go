//go:build unix

package pgtest

import (
	"errors"
	"syscall"
)

// alive reports whether a process pid exists (it may be another's, if
// the pid was reused: then a cluster is left running, never wrongly
// stopped).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
