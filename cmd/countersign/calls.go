package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/reconcile"
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
		Use:   "reconcile ID (--ran | --did-not-run) [--note TEXT]",
		Short: "Record whether an interrupted call took effect",
		Long: `An approved call whose run was interrupted (the server stopped while it ran,
an upstream call timed out, was cancelled after it was sent, or lost its
connection) is recorded as call.interrupted: whether it took effect is unknown,
and it is never run again. Once you have found out, on the system it acted on,
record it: a call.reconciled entry with your finding and who you are, shown on
the approver page and to the agent (approval_status, tasks/get). A call can be
reconciled once, and only when it was interrupted.

ID is what 'countersign calls interrupted' lists: the AUTH_REQ_ID of a call
that had an approval request, or #SEQ for a call that had none (a routine
call, or one a standing grant let through): SEQ is the audit seq of its
call.interrupted entry, which names that call for good. Quote it in a shell
('#42'), where # starts a comment, or give the bare number (42). #SEQ also
names a call that had a request, which is then reconciled as its request.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case ran && didNotRun:
				return errors.New("--ran and --did-not-run contradict each other: say one")
			case !ran && !didNotRun:
				return errors.New("say what you found: --ran or --did-not-run")
			}
			if by == "" {
				by = cliActor()
			}
			f := reconcile.Finding{Ran: ran, By: by, Note: note}
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				if seq, ok := callSeq(args[0]); ok {
					e, err := svc.ReconcileCall(ctx, seq, f)
					switch {
					case errors.Is(err, approval.ErrNotFound):
						return fmt.Errorf("no interrupted call #%d: the audit log has no entry %d", seq, seq)
					case err != nil:
						return err
					}
					id := e.RequestID
					if id == "" {
						id = fmt.Sprintf("#%d", e.InterruptedSeq)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", id, e.Tool, e.Reason)
					return nil
				}
				r, err := svc.Reconcile(ctx, args[0], f)
				switch {
				case errors.Is(err, approval.ErrNotFound):
					return fmt.Errorf("no approval request %q (a call without one is named #SEQ)", args[0])
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
		Long: `Lists the calls whose outcome is unknown and that nobody has reconciled yet,
each with the ID 'countersign calls reconcile' takes: the AUTH_REQ_ID of a call
that had an approval request (WHEN: when it was approved), or #SEQ, the audit
seq of the call.interrupted entry of a call that had none (WHEN: when it was
interrupted).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				rs, err := svc.Unreconciled(ctx)
				if err != nil {
					return err
				}
				calls, err := svc.UnreconciledCalls(ctx)
				if err != nil {
					return err
				}
				const when = "2006-01-02 15:04"
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tTOOL\tAGENT\tWHEN\tWHY UNKNOWN")
				for _, r := range rs {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Tool, r.Agent, r.DecidedAt.Format(when), r.Reason)
				}
				for _, e := range calls {
					at := e.Time
					if t, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
						at = t.Local().Format(when)
					}
					fmt.Fprintf(w, "#%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Tool, e.Agent, at, e.Reason)
				}
				return w.Flush()
			})
		},
	}
	cmd.AddCommand(reconcile, interrupted)
	return cmd
}

// callSeq reads the ID of a call named by its call.interrupted entry:
// #SEQ, or SEQ alone (an auth_req_id is a UUID, never a number).
func callSeq(id string) (int64, bool) {
	seq, err := strconv.ParseInt(strings.TrimPrefix(id, "#"), 10, 64)
	return seq, err == nil
}
