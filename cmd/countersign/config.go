package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check and show the configuration",
	}
	validate := &cobra.Command{
		Use:   "validate [PATH]",
		Short: "Check a configuration file, policies included, without starting anything",
		Long: `Validate loads PATH (or the file --config names, or the default) exactly as
serve would, compiles every policy rule, and reports every problem with its key
path. It exits 0 when the configuration is valid and 2 when it is not.

With --connect it also connects to every upstream MCP server, as serve would,
and reports policies under tools: for upstream tools the upstream does not
offer.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				cmd.Flags().Set("config", args[0])
			}
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if _, err := compilePolicy(c, warnings(cmd)); err != nil {
				return err
			}
			if connect, _ := cmd.Flags().GetBool("connect"); connect && len(c.Upstreams) > 0 {
				cat, closeUpstreams, err := connectUpstreams(cmd.Context(), c, warnings(cmd))
				if err != nil {
					return configError(fmt.Errorf("%s: %w", c.Source, err))
				}
				defer closeUpstreams()
				if errs := unknownUpstreamTools(c, cat); len(errs) > 0 {
					return configError(errors.Join(errs...))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d upstream tools offered\n", c.Source, len(cat.Specs()))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%d tools, %d upstreams, %d approvers)\n",
				c.Source, len(c.Tools), len(c.Upstreams), len(c.Approvers))
			return nil
		},
	}
	validate.Flags().Bool("connect", false, "also connect to every upstream and check the policies under tools name tools they offer")
	cmd.AddCommand(validate)
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
func compilePolicy(c *config.Config, log *slog.Logger) (*authz.Policy, error) {
	opts := policyOptions(c)
	opts.Logger = log
	p, err := authz.Compile(c.Tools, c.Approvers, opts)
	if err != nil {
		return nil, configError(fmt.Errorf("%s: %w", c.Source, err))
	}
	return p, nil
}
