package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2 // the configuration is missing, corrupted or invalid
)

// exitError carries an exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// configError marks err as a configuration problem (exit status 2).
func configError(err error) error { return &exitError{exitConfig, err} }

// loadConfig loads the file named by the root --config flag; without one,
// $COUNTERSIGN_CONFIG, ./mcp.yaml, then the embedded default. Its policies
// are compiled too, so every command refuses a configuration serve would
// refuse, with every problem of either kind in one report.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	c, err := checkConfig(path)
	// Once per command, though some load twice; serve logs them with its
	// own logger.
	if c != nil && cmd.Name() != "serve" && cmd.Annotations["config-warned"] == "" {
		warnConfig(warnings(cmd), c)
		if cmd.Annotations == nil {
			cmd.Annotations = map[string]string{}
		}
		cmd.Annotations["config-warned"] = "yes"
	}
	return c, err
}

// warnConfig logs what in c deserves a person's attention without
// stopping anything (an environment variable that overrides nothing).
func warnConfig(log *slog.Logger, c *config.Config) {
	for _, w := range c.Warnings {
		log.Warn(w, "config", c.Source)
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "countersign",
		Short: "An MCP server whose high-risk tools wait for a human's security key",
		Long: `Countersign exposes guarded tools to AI agents over MCP (stdio, Streamable HTTP
and SSE). Routine calls run at once. High-risk calls - a large transfer, a
production deploy, reading a restricted secret - wait until a human approves
them on a local web page by tapping a security key, and every decision is
written to a signed, hash-chained audit log that auditors can verify offline.

Start with:
  countersign serve                 serve one agent over stdio on the embedded default
                                    (demo ledger, deploy script and secrets; data in
                                    $XDG_STATE_HOME/countersign or ~/.local/state/countersign)
  countersign serve --http 127.0.0.1:8711
                                    serve agents over HTTP at /mcp (Streamable) and /sse
  countersign approvers enroll ID   print a one-time link to register an approver's key
  countersign init DIR              write a commented mcp.yaml (and its demo files) to change
  countersign config validate FILE  check a configuration before deploying it
  countersign completion bash       shell completion (also zsh, fish, powershell)`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("config", "", "path to mcp.yaml (default: $COUNTERSIGN_CONFIG, ./mcp.yaml, else the embedded default)")
	root.PersistentFlags().String("log-format", "", "log format on stderr: text or json (default from config)")
	root.AddCommand(newServeCmd(), newInitCmd(), newConfigCmd(), newVersionCmd(), newPolicyCmd(), newAuditCmd(),
		newApproversCmd(), newAgentsCmd(), newTokenCmd())
	root.AddCommand(newHealthcheckCmd())
	root.AddCommand(newUpstreamsCmd())
	root.AddCommand(newCallsCmd())
	root.AddCommand(newBackupCmd())
	root.AddCommand(newReloadCmd())
	return root
}

func run(args []string) int {
	root := newRootCmd(os.Stdout, os.Stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "countersign:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ce *daemon.ConfigError
	if errors.As(err, &ce) {
		return exitConfig
	}
	return exitFail
}

// newLogger logs to stderr only: under stdio, stdout carries MCP frames.
func newLogger(cmd *cobra.Command, c *config.Config) (*slog.Logger, error) {
	format, _ := cmd.Flags().GetString("log-format")
	if format == "" {
		format = c.Server.LogFormat
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Server.LogLevel)); err != nil {
		return nil, configError(fmt.Errorf("server.log_level: %w", err))
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), opts)), nil
	}
	return nil, configError(fmt.Errorf("--log-format: expected text or json, got %q", format))
}
