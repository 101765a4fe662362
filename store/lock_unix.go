//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is what lockFile returns when another process holds the lock.
var errLocked = errors.New("locked by another process")

// lockFile takes an exclusive lock on f without waiting; the kernel
// releases it when f is closed or the process ends. The file is opened
// close-on-exec, so the processes a server starts (deploy commands,
// upstream servers) do not inherit the lock and cannot outlive it holding
// it.
func lockFile(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}
