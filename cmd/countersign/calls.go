package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"text/tabwriter"

	"github.com/countersign/countersign/approval"
	"github.com/spf13/cobra"
)

func newCallsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Settle calls whose outcome is unknown",
	}
	var (
		ran, didNotRun bool
		note, by       string
	)
	reconcile := &cobra.Command{
		Use:   "reconcile AUTH_REQ_ID (--ran | --did-not-run) [--note TEXT]",
		Short: "Record whether an interrupted call took effect",
		Long: `An approved call whose run was interrupted (the server stopped while it ran,
an upstream call timed out, was cancelled after it was sent, or lost its
connection) is recorded as call.interrupted: whether it took effect is unknown,
and it is never run again. Once you have found out, on the system it acted on,
record it: a call.reconciled entry with your finding and who you are, shown on
the approver page and to the agent (approval_status, tasks/get). A request can
be reconciled once, and only when its call was interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case ran && didNotRun:
				return errors.New("--ran and --did-not-run contradict each other: say one")
			case !ran && !didNotRun:
				return errors.New("say what you found: --ran or --did-not-run")
			}
			if by == "" {
				by = operator()
			}
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				r, err := svc.Reconcile(ctx, args[0], approval.Finding{Ran: ran, By: by, Note: note})
				switch {
				case errors.Is(err, approval.ErrNotFound):
					return fmt.Errorf("no approval request %q", args[0])
				case err != nil:
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", r.ID, r.Tool, r.Reason)
				return nil
			})
		},
	}
	reconcile.Flags().BoolVar(&ran, "ran", false, "the call took effect")
	reconcile.Flags().BoolVar(&didNotRun, "did-not-run", false, "the call did not take effect")
	reconcile.Flags().StringVar(&note, "note", "", "how you know, for the audit log")
	reconcile.Flags().StringVar(&by, "by", "", "who found out, for the audit log (default: admin and your login name)")
	interrupted := &cobra.Command{
		Use:   "interrupted",
		Short: "List interrupted calls nobody has reconciled yet",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				rs, err := svc.Unreconciled(ctx)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "AUTH_REQ_ID\tTOOL\tAGENT\tAPPROVED\tWHY UNKNOWN")
				for _, r := range rs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tool, r.Agent, r.DecidedAt.Format("2006-01-02 15:04"), r.Reason)
				}
				return w.Flush()
			})
		},
	}
	cmd.AddCommand(reconcile, interrupted)
	return cmd
}

// operator names the person running a command, for the audit log: what
// the machine says they are logged in as.
func operator() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		return "admin"
	}
	return "admin (" + name + ")"
}
