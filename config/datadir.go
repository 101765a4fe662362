package config

import (
	"fmt"
	"os"
)

// EnsureDataDir creates the data directory with mode 0700. It holds the
// server's signing key and the database, so an existing directory that
// others can read is tightened rather than trusted.
func (c *Config) EnsureDataDir() error {
	dir := c.Server.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s: not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	return nil
}
