package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/spf13/cobra"
)

func newApproversCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvers",
		Short: "Enroll approvers' security keys, list them, revoke them",
		Long: `Approvers are listed in mcp.yaml (approvers:). Their security keys are kept in
the data directory; these commands work while serve runs, against the same
database, and every change is written to the audit log.`,
	}

	enroll := &cobra.Command{
		Use:   "enroll ID",
		Short: "Print a one-time link that registers a security key for approver ID",
		Long: `Enroll prints a link to open on the approver's device. The link is single use,
expires after approval.enroll_ttl, and is bound to that approver.

The first key of an approver needs only the link. For a further key the page
first asks for one of the approver's existing keys, so a leaked link cannot add
a key to someone who already has one. An approver who lost every key: revoke
them all (revoke-key), then enroll again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				link, err := svc.CreateEnrollment(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), link)
				fmt.Fprintln(cmd.ErrOrStderr(), "Open this link once, on", args[0]+"'s device, with their security key at hand.")
				if c, err := loadConfig(cmd); err == nil && !listening(c.Approval.Listen) {
					fmt.Fprintf(cmd.ErrOrStderr(), "Note: no server is listening at %s (approval.listen) now. The link works only while\n"+
						"countersign serve runs there with this configuration: start it before the link is opened.\n", c.Approval.Listen)
				}
				return nil
			})
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List approvers and their keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				creds, err := svc.Credentials(ctx)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "APPROVER\tNAME\tROLES\tKEY\tENROLLED\tLAST USED\tSTATUS")
				for _, a := range c.Approvers {
					n := 0
					for _, k := range creds {
						if k.ApproverID != a.ID {
							continue
						}
						n++
						used, status := "never", "active"
						if !k.LastUsedAt.IsZero() {
							used = k.LastUsedAt.Format("2006-01-02 15:04")
						}
						if k.Revoked {
							status = "revoked " + k.RevokedAt.Format("2006-01-02 15:04") + ": " + k.RevokeReason
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, strings.Join(a.Roles, ","), k.ID,
							k.CreatedAt.Format("2006-01-02 15:04"), used, status)
					}
					if n == 0 {
						fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\tno key: run `countersign approvers enroll %s`\n", a.ID, a.Name, strings.Join(a.Roles, ","), a.ID)
					}
				}
				// Keys of approvers removed from the config still count as history.
				for _, k := range creds {
					if !configured(c.Approvers, k.ApproverID) {
						fmt.Fprintf(w, "%s\t(not in config)\t-\t%s\t%s\t-\t%s\n", k.ApproverID, k.ID, k.CreatedAt.Format("2006-01-02 15:04"),
							map[bool]string{true: "revoked", false: "active, unusable"}[k.Revoked])
					}
				}
				return w.Flush()
			})
		},
	}

	var reason string
	revoke := &cobra.Command{
		Use:   "revoke-key CREDENTIAL_ID",
		Short: "Revoke a security key (the KEY column of list)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withApprovals(cmd, func(ctx context.Context, svc *approval.Service) error {
				if err := svc.RevokeCredential(ctx, args[0], reason); err != nil {
					if errors.Is(err, ceremony.ErrUnknownCredentialID) {
						return fmt.Errorf("%w (see `countersign approvers list`)", err)
					}
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "revoked", args[0])
				return nil
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why, for the audit log (default \"revoked by admin\")")

	cmd.AddCommand(enroll, list, revoke)
	return cmd
}

func configured(list []config.Approver, id string) bool {
	return slices.ContainsFunc(list, func(a config.Approver) bool { return a.ID == id })
}

// withApprovals opens the data directory's database, the audit log and the
// approval service for one command, and closes them after.
func withApprovals(cmd *cobra.Command, fn func(context.Context, *approval.Service) error) error {
	c, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	return withLog(cmd, c, func(ctx context.Context, db *store.DB, log *audit.Log) error {
		svc, err := approval.New(ctx, db, log, daemon.ApprovalOptions(c))
		if err != nil {
			return err
		}
		defer svc.Close()
		return fn(ctx, svc)
	})
}

// withLog opens the data directory's database and its audit log for one
// admin command, and closes them after. A log that fails its check at
// open (tampered) refuses the command: what the command would record
// could not be appended anyway.
func withLog(cmd *cobra.Command, c *config.Config, fn func(context.Context, *store.DB, *audit.Log) error) error {
	ctx := cmd.Context() // cobra's Execute never leaves it nil
	db, log, err := daemon.OpenAudit(ctx, c, audit.Options{Logger: warnings(cmd)})
	if db != nil {
		defer db.Close()
	}
	if log != nil {
		defer log.Close()
	}
	if err != nil {
		return err
	}
	return fn(ctx, db, log)
}

// listening reports whether something accepts connections at addr, the
// approver page's listen address; a wildcard host is tried on loopback.
func listening(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 2*time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
