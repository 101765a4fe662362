package main

import (
	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
)

// loadConfig loads the file named by the root --config flag, or the
// embedded default.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(path)
}

func run(args []string) int {
	root := &cobra.Command{Use: "countersign", SilenceUsage: true}
	root.PersistentFlags().String("config", "", "path to mcp.yaml (default: ./mcp.yaml if present, else the embedded default)")
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return 1
	}
	return 0
}
