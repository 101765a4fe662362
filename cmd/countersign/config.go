package main

import (
	"fmt"

	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check and show the configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate [PATH]",
		Short: "Check a configuration file, policies included, without starting anything",
		Long: `Validate loads PATH (or the file --config names, or the default) exactly as
serve would, compiles every policy rule, and reports every problem with its key
path. It exits 0 when the configuration is valid and 2 when it is not.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				cmd.Flags().Set("config", args[0])
			}
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if _, err := compilePolicy(c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%d tools, %d approvers)\n", c.Source, len(c.Tools), len(c.Approvers))
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration after defaults and COUNTERSIGN_* overrides",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			out, err := config.Encode(c)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# source: %s\n%s", c.Source, out)
			return nil
		},
	})
	return cmd
}

// compilePolicy compiles the rules of c; a rule that does not compile is a
// configuration error.
func compilePolicy(c *config.Config) (*authz.Policy, error) {
	p, err := authz.Compile(c.Tools, c.Approvers, policyOptions(c))
	if err != nil {
		return nil, configError(fmt.Errorf("%s: %w", c.Source, err))
	}
	return p, nil
}
