//go:build unix

package store

import "os"

// lockOwner takes an owner's liveness lock: the data directory's kind of
// lock, which the kernel drops when the process ends.
func lockOwner(f *os.File) error { return lockFile(f) }
