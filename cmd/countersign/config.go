package main

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/countersign/countersign/attest"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/tools"
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
			if _, err := daemon.CompilePolicy(c, warnings(cmd)); err != nil {
				return err
			}
			if err := daemon.CheckTokenKey(c); err != nil {
				return configError(fmt.Errorf("%s: %w", c.Source, err))
			}
			// The tools serve would offer, counted as serve's start-up
			// line counts them; a tools: entry is a policy, and ciba's
			// names no tool.
			served, upstreamNote := len(c.ServedTools()), ""
			if len(c.Upstreams) > 0 {
				upstreamNote = ", not counting upstream tools (--connect counts them)"
			}
			if connect, _ := cmd.Flags().GetBool("connect"); connect && len(c.Upstreams) > 0 {
				cat, closeUpstreams, err := connectUpstreams(cmd.Context(), c, warnings(cmd))
				if err != nil {
					return configError(fmt.Errorf("%s: %w", c.Source, err))
				}
				defer closeUpstreams()
				if errs := daemon.UnknownUpstreamTools(c, cat); len(errs) > 0 {
					return configError(errors.Join(errs...))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d upstream tools offered\n", c.Source, len(cat.Specs()))
				served, upstreamNote = served+len(cat.Specs()), ""
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%d tools%s, %d upstreams, %d approvers)\n",
				c.Source, served, upstreamNote, len(c.Upstreams), len(c.Approvers))
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

// checkConfig loads the configuration at path (see [config.Check]), asks
// the built-in backends what they would refuse, compiles the policies, and
// returns every problem of all three in one error: a person fixing a
// configuration sees the whole list at once. A problem at a key already
// reported is left out.
// Problems accept leaves out (a command that only reads) are not problems.
func checkConfig(path string, accept ...func(*config.Config, *config.Error) bool) (*config.Config, error) {
	c, err := config.Check(path)
	if c == nil {
		return nil, configError(err)
	}
	problems := unjoin(err)
	for _, ok := range accept {
		problems = slices.DeleteFunc(problems, func(e error) bool {
			var ce *config.Error
			return errors.As(e, &ce) && ok(c, ce)
		})
	}
	for _, e := range tools.CheckConfig(c) {
		var ce *config.Error
		if !errors.As(e, &ce) || !reportedAt(problems, ce.Path) {
			problems = append(problems, e)
		}
	}
	if len(c.Approval.AttestationRoots) > 0 && !reportedAt(problems, "approval.attestation_roots") {
		if _, err := attest.LoadRoots(c.Approval.AttestationRoots); err != nil {
			problems = append(problems, &config.Error{Source: c.Source, Path: "approval.attestation_roots", Msg: err.Error()})
		}
	}
	_, perr := authz.Compile(c.Tools, c.Approvers, daemon.PolicyOptions(c, slog.New(slog.DiscardHandler)))
	for _, e := range unjoin(perr) {
		var ce *authz.CompileError
		if !errors.As(e, &ce) {
			problems = append(problems, e)
			continue
		}
		if !reportedAt(problems, ce.Path) {
			problems = append(problems, &config.Error{Source: c.Source, Path: ce.Path, Msg: ce.Msg})
		}
	}
	if len(problems) > 0 {
		return nil, configError(errors.Join(problems...))
	}
	return c, nil
}

// unjoin lists the errors errors.Join put together.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// reportedAt reports whether one of problems is about key or a key
// containing it.
func reportedAt(problems []error, key string) bool {
	for _, p := range problems {
		var ce *config.Error
		if errors.As(p, &ce) && ce.Path != "" &&
			(key == ce.Path || strings.HasPrefix(key, ce.Path+".") || strings.HasPrefix(key, ce.Path+"[")) {
			return true
		}
	}
	return false
}
