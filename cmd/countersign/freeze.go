package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/spf13/cobra"
)

// newFreezeCmds are the kill switch: `agents freeze` and `agents unfreeze`.
func newFreezeCmds() []*cobra.Command {
	var all bool
	var reason string
	freezeCmd := &cobra.Command{
		Use:   "freeze NAME | --all",
		Short: "Refuse every call of an agent at once, cancel its waiting requests, revoke its grants",
		Long: `Freeze stops an agent now, while serve runs (this command writes to the same
database; serve refuses the agent's very next call). Every call of the agent,
over any transport, is refused with an error that says who froze it and since
when; its approval requests still waiting are cancelled (their calls return),
its standing grants are revoked, and an approval it already has but whose call
has not started never runs. A call already running finishes. With --all, every
agent is frozen.

The freeze is recorded in the audit log (agent.frozen) with the OS user who ran
this command. An approver can also freeze an agent from the approver page.
Only this command lifts a freeze: countersign agents unfreeze NAME (--all).`,
		Args: freezeArgs(&all),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			name := freeze.AllAgents
			if !all {
				name = args[0]
				if known := configuredAgents(c); !slices.Contains(known, name) {
					fmt.Fprintf(cmd.ErrOrStderr(), "Note: %s is not an agent of this configuration (%s); frozen anyway.\n", name, strings.Join(known, ", "))
				}
			}
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				st, err := svc.FreezeAgent(ctx, name, cliActor(), reason)
				var fe *freeze.FrozenError
				if errors.As(err, &fe) {
					fmt.Fprintf(cmd.ErrOrStderr(), "Already frozen: %v\n", fe)
					return printFreezes(ctx, cmd.ErrOrStderr(), svc)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Frozen: %s. %d waiting approval request(s) cancelled, %d standing grant(s) revoked.\n",
					frozenWho(name), len(st.Cancelled), len(st.Revoked))
				return printFreezes(ctx, cmd.ErrOrStderr(), svc)
			})
		},
	}
	freezeCmd.Flags().BoolVar(&all, "all", false, "freeze every agent")
	freezeCmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log and the approver page")

	var unAll bool
	var unReason string
	unfreeze := &cobra.Command{
		Use:   "unfreeze NAME | --all",
		Short: "Lift an agent's freeze (--all lifts the freeze of every agent)",
		Long: `Unfreeze lets a frozen agent's calls run again, from its next call. What the
freeze cancelled and revoked stays so: the agent raises its requests again, and
approvers grant again. --all lifts a freeze of every agent (freeze --all); a
freeze of one agent stays until it is lifted by name. Recorded in the audit log
(agent.unfrozen) with the OS user who ran this command.`,
		Args: freezeArgs(&unAll),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := freeze.AllAgents
			if !unAll {
				name = args[0]
			}
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				if err := svc.UnfreezeAgent(ctx, name, cliActor(), unReason); err != nil {
					if errors.Is(err, freeze.ErrNotFrozen) {
						return fmt.Errorf("%s not frozen (see `countersign agents list`)", frozenWho(name))
					}
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Unfrozen: %s.\n", frozenWho(name))
				return printFreezes(ctx, cmd.ErrOrStderr(), svc)
			})
		},
	}
	unfreeze.Flags().BoolVar(&unAll, "all", false, "lift the freeze of every agent (freeze --all)")
	unfreeze.Flags().StringVar(&unReason, "reason", "", "why, for the audit log")
	return []*cobra.Command{freezeCmd, unfreeze}
}

// freezeArgs wants NAME, or --all and no name.
func freezeArgs(all *bool) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case *all && len(args) > 0:
			return errors.New("give a NAME or --all, not both")
		case *all:
			return nil
		case len(args) != 1:
			return errors.New("give one agent NAME, or --all")
		case !freeze.ValidAgent(args[0]) || args[0] == freeze.AllAgents:
			return fmt.Errorf("agent name %q: expected a lower-case id (letters, digits, . _ -); --all for every agent", args[0])
		}
		return nil
	}
}

func frozenWho(name string) string {
	if name == freeze.AllAgents {
		return "all agents"
	}
	return "agent " + name
}

// printFreezes is the status line: which agents are frozen now.
func printFreezes(ctx context.Context, w io.Writer, svc *approval.Service) error {
	fs, err := svc.Freezes(ctx)
	if err != nil {
		return err
	}
	if len(fs) == 0 {
		fmt.Fprintln(w, "No agent is frozen.")
		return nil
	}
	var names []string
	for _, f := range fs {
		names = append(names, freezeStatus(f))
	}
	fmt.Fprintf(w, "Frozen now: %s.\n", strings.Join(names, "; "))
	return nil
}

func freezeStatus(f freeze.Freeze) string {
	who := f.Agent
	if who == freeze.AllAgents {
		who = "all agents (--all)"
	}
	return fmt.Sprintf("%s by %s since %s", who, f.By, f.At.UTC().Format(time.RFC3339))
}

// configuredAgents are the names serve gives the agents this
// configuration allows.
func configuredAgents(c *config.Config) []string {
	out := []string{c.Server.StdioAgent}
	if len(c.HTTP.Agents) == 0 {
		out = append(out, "anonymous")
	}
	for _, a := range c.HTTP.Agents {
		out = append(out, a.ID)
	}
	return out
}

// cliActor is who an admin command (freeze, upstreams accept, calls
// reconcile) is recorded as having been run by: cli: and the OS user
// running it, one form for every command so an auditor can search for it.
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return fmt.Sprintf("cli:uid-%d", os.Getuid())
}

// storedFreezes returns the freezes in force, or none when the data
// directory has no database yet (listing creates nothing).
func storedFreezes(cmd *cobra.Command, c *config.Config) ([]freeze.Freeze, error) {
	// No SQLite file yet: nothing frozen, and nothing created by looking.
	// A PostgreSQL store has no file to look for.
	if _, err := os.Stat(filepath.Join(c.Server.DataDir, store.FileName)); c.Store.URL == "" && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var fs []freeze.Freeze
	err := withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
		var err error
		fs, err = svc.Freezes(ctx)
		return err
	})
	return fs, err
}
