//go:build !unix

package store

import (
	"errors"
	"os"
)

// lockOwner is unsupported here: a locked file cannot be removed while its
// holder lives, so owner files would pile up. Entries of stopped processes
// are taken once they are stale instead.
func lockOwner(*os.File) error { return errors.ErrUnsupported }
