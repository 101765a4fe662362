package main

import (
	"fmt"

	"github.com/countersign/countersign"
	"github.com/spf13/cobra"
)

// buildVersion is the release version from the repository's VERSION file,
// which every build embeds (package countersign).
func buildVersion() string { return countersign.Version() }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the release version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), countersign.ReadBuild())
		},
	}
}
