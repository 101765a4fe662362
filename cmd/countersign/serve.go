package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the guarded tools to agents (stdio by default) and the approver page",
		Long: `Serve exposes the configured tools over MCP. By default it speaks MCP on stdin
and stdout, for an agent that starts countersign as a subprocess; stdout then
carries nothing but MCP messages and all logs go to stderr.

With --http ADDR it serves agents over HTTP instead: Streamable HTTP at /mcp and
SSE at /sse (messages to /message), on one listener.

Either way the approver page listens on approval.listen (127.0.0.1:8710 by
default) and its URL is printed on stderr at start.

Both listeners also answer /healthz (the process is up), /readyz (the
database takes a write, the audit log passed its check at start, every
upstream is connected, no witness refuses the log; 503 and why, otherwise;
each witness's lag is reported; WARN lines, which keep it ready, name upstream
tools held since their listing changed and policies that name no tool) and
/metrics (Prometheus).

Each upstream's tools are pinned on its first connection; a tool whose later
listing differs is held until an admin accepts it (countersign upstreams).

With audit.witness_file or audit.witnesses, a log that does not extend the
checkpoint a witness holds (a database restored from an older copy) is
refused at start, naming both tree sizes; --accept-rollback serves it and
records that in the log.

SIGHUP (or countersign reload) reads the configuration again and puts the
policy, approvers, agents' tokens, notifications and the pending and rate
limits in force without a restart: calls under way and waiting keep going,
and the new policy is recorded (policy.loaded). A file that is invalid, or
that changes a setting only a restart changes (listen addresses, the data
directory, the store, upstreams …), is refused whole, naming why; the
running configuration stays.

The configuration is checked as config validate checks it before anything
is created; the data directory is then made (mode 0700) if needed, and with
the embedded default the demo files it names are written into it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGHUP reloads (countersign reload); taken first, so that from
			// here on it never ends the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			load := func() (*config.Config, error) {
				c, err := loadConfig(cmd)
				if err != nil {
					return nil, err
				}
				if addr, _ := cmd.Flags().GetString("http"); addr != "" {
					c.HTTP.Addr = addr
				}
				c.Audit.AcceptRollback, _ = cmd.Flags().GetBool("accept-rollback")
				return c, nil
			}
			c, err := load()
			if err != nil {
				return err
			}
			log, err := newLogger(cmd, c)
			if err != nil {
				return err
			}
			warnConfig(log, c)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.Serve(ctx, c, daemon.Options{Logger: log, Version: buildVersion(), Load: load, Reload: hup})
		},
	}
	cmd.Flags().String("http", "", "serve agents over HTTP on ADDR (e.g. 127.0.0.1:8711) instead of stdio")
	cmd.Flags().Bool("accept-rollback", false, "serve although the audit log does not extend the checkpoint in audit.witness_file or held by an audit.witnesses witness (recorded in the log)")
	return cmd
}
