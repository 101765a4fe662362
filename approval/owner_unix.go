//go:build unix

package approval

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f without waiting; the kernel
// releases it when the process ends.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
