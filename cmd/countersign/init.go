package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
)

func newInitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init [DIR]",
		Short: "Write a commented mcp.yaml and the demo files it names into DIR, to customise",
		Long: `Init writes DIR/mcp.yaml (default DIR: the current directory): the embedded
default configuration, with every option explained in comments, including
upstream MCP servers. It also writes the demo backends that configuration
names, DIR/demo/deploy.sh and DIR/demo/secrets/, which its relative paths
point at. Replace them with your own deploy command and secrets directory.

It refuses to overwrite anything: if any of these files exists, nothing is
written. Then:

  countersign config validate DIR/mcp.yaml
  countersign serve --config DIR/mcp.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			written, err := writeInit(dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range written {
				fmt.Fprintf(out, "wrote %s\n", p)
			}
			file := filepath.Join(dir, config.DefaultFile)
			fmt.Fprintf(out, "\nNext:\n  countersign config validate %s\n  countersign serve --config %s\n", file, file)
			return nil
		},
	}
}

// writeInit writes the default configuration and its demo files into dir,
// or nothing if any of them already exists.
func writeInit(dir string) ([]string, error) {
	targets := []string{filepath.Join(dir, config.DefaultFile)}
	for _, f := range countersign.DemoFiles() {
		targets = append(targets, filepath.Join(dir, filepath.FromSlash(f)))
	}
	var exist []string
	for _, p := range targets {
		if _, err := os.Lstat(p); err == nil {
			exist = append(exist, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if len(exist) > 0 {
		return nil, fmt.Errorf("init: refusing to overwrite %s (move them away, or init another directory)", strings.Join(exist, ", "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	f, err := os.OpenFile(targets[0], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	_, werr := f.Write(countersign.DefaultConfig())
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("init: %w", werr)
	}
	demo, err := countersign.InstallDemo(dir)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return append(targets[:1], demo...), nil
}
