// Package countersign holds what the binary carries with it: the default
// configuration that `countersign serve` runs when given none, and the demo
// files that configuration names.
package countersign

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed mcp.yaml
var defaultConfig []byte

// DefaultConfig returns the repository's mcp.yaml, embedded at build time:
// a copy, so no caller can change it for the others. It is also what
// `countersign init` writes.
func DefaultConfig() []byte { return bytes.Clone(defaultConfig) }

// Demo holds the demo backends DefaultConfig names, under demo/: the deploy
// command (demo/deploy.sh, a shell script that logs the deploy in the data
// directory) and three secrets (demo/secrets/). The embedded default
// resolves its relative paths against the data directory, where serve
// writes these files on first start; `countersign init DIR` writes them
// beside the mcp.yaml it creates, so the same relative paths hold there.
//
//go:embed demo
var Demo embed.FS

// DemoFiles lists the demo files by their slash-separated path in [Demo].
func DemoFiles() []string {
	var files []string
	fs.WalkDir(Demo, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	return files
}

// InstallDemo writes the demo files under dir (dir/demo/...), creating the
// ones that are missing and leaving any that exist as they are: someone may
// have changed them. Directories are 0700, secrets 0600, and the deploy
// script 0700 since it must run. It returns the paths it created.
func InstallDemo(dir string) ([]string, error) {
	var created []string
	for _, name := range DemoFiles() {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if _, err := os.Lstat(path); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return created, fmt.Errorf("demo files: %w", err)
		}
		data, err := Demo.ReadFile(name)
		if err != nil {
			return created, fmt.Errorf("demo files: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return created, fmt.Errorf("demo files: %w", err)
		}
		mode := os.FileMode(0o600)
		if filepath.Ext(name) == ".sh" {
			mode = 0o700
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return created, fmt.Errorf("demo files: %w", err)
		}
		_, werr := f.Write(data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return created, fmt.Errorf("demo files: %s: %w", path, werr)
		}
		created = append(created, path)
	}
	return created, nil
}
