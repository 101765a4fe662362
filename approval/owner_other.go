//go:build !unix

package approval

import (
	"errors"
	"os"
)

// lockFile is unsupported here: entries of stopped processes are taken
// once they are stale.
func lockFile(*os.File) error { return errors.ErrUnsupported }
