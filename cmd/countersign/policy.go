package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/internal/daemon"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/ledger"
	"github.com/countersign/countersign/vocab"
	"github.com/spf13/cobra"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Dry-run calls against the policy",
	}
	var toolName, argsJSON, agent, factsJSON, casesFile, usageJSON string
	var connect, readOnly bool
	test := &cobra.Command{
		Use:   "test",
		Short: "Show what the policy decides for a call, or check a file of expected decisions",
		Long: `Test asks the policy what it would decide, and runs nothing.

One call:
  countersign policy test --tool transfer --args '{"from":"operating","to":"Acme Supplies","amount":20000,"currency":"USD"}'

A file of cases with expected decisions (exit status 1 on any mismatch, so the
policy can be tested in CI):
  countersign policy test --cases policy-cases.yaml

Facts the rules use (such as counterparty.known) come from the backends in the
data directory, unless --facts or a case's facts: give them. Test writes
nothing there: before serve has made the database, the ledger is the one the
configuration seeds.

An upstream tool not listed under tools: takes its upstream's default level,
which depends on the tool's readOnlyHint: --connect asks the upstream, or
--read-only says it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			policy, err := daemon.CompilePolicy(c, warnings(cmd))
			if err != nil {
				return err
			}
			facts := newFactSource(c, warnings(cmd))
			defer func() { facts.close() }() // close is set when the database is opened
			out := cmd.OutOrStdout()
			if casesFile != "" {
				cases, err := authz.LoadCases(casesFile)
				if err != nil {
					return err
				}
				for i := range cases {
					if cases[i].Facts != nil {
						continue
					}
					// A case may leave facts out on purpose, to show that
					// the policy fails closed without them: a backend that
					// cannot supply them leaves them out too.
					f, err := facts.lookup(cmd.Context(), cases[i].Tool, cases[i].Args)
					if err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "note: case %d (%s): no facts from the backend: %v\n", i, cases[i].Name, err)
						continue
					}
					cases[i].Facts = f
				}
				return reportCases(out, policy.RunCases(cases))
			}
			if toolName == "" {
				return fmt.Errorf("give --tool (with --args) or --cases")
			}
			args := map[string]any{}
			if err := decodeObject(argsJSON, &args); err != nil {
				return fmt.Errorf("--args: %w", err)
			}
			var f map[string]any
			if factsJSON != "" {
				if err := decodeObject(factsJSON, &f); err != nil {
					return fmt.Errorf("--facts: %w", err)
				}
			} else if f, err = facts.lookup(cmd.Context(), toolName, args); err != nil {
				// As for a case: the policy decides without them, as it
				// would for a backend that cannot supply them.
				fmt.Fprintf(cmd.ErrOrStderr(), "note: no facts from the backend (give --facts): %v\n", err)
			}
			if connect && len(c.Upstreams) > 0 {
				if _, ok := c.UpstreamOf(toolName); ok {
					cat, closeUpstreams, err := connectUpstreams(cmd.Context(), c, warnings(cmd))
					if err != nil {
						return err
					}
					defer closeUpstreams()
					spec, ok := cat.Lookup(toolName)
					if !ok {
						return errors.Join(daemon.UnknownUpstreamTools(&config.Config{Source: "--tool", Tools: map[string]config.Tool{toolName: {}}, Upstreams: c.Upstreams}, cat)...)
					}
					readOnly = spec.ReadOnly()
					fmt.Fprintf(out, "upstream tool:\t%s (readOnlyHint %v)\n", toolName, readOnly)
				}
			}
			var usage map[string]any
			if usageJSON != "" {
				if err := decodeObject(usageJSON, &usage); err != nil {
					return fmt.Errorf("--usage: %w", err)
				}
			}
			d := policy.Decide(authz.Input{Tool: toolName, Agent: agent, Args: args, Facts: f, Now: time.Now(),
				ReadOnly: readOnly, Usage: authz.NoUsage(usage)})
			return printDecision(out, d)
		},
	}
	test.Flags().StringVar(&toolName, "tool", "", "tool name")
	test.Flags().StringVar(&argsJSON, "args", "{}", "arguments as a JSON object")
	test.Flags().StringVar(&agent, "agent", "cli", "agent id the rules see")
	test.Flags().StringVar(&factsJSON, "facts", "", "facts as a JSON object (default: asked of the backend)")
	test.Flags().StringVar(&casesFile, "cases", "", "YAML file of cases with expected decisions")
	test.Flags().StringVar(&usageJSON, "usage", "", `what the agent did before, e.g. '{"agent_payee_amount_24h": 9999}' (default: nothing)`)
	test.Flags().BoolVar(&connect, "connect", false, "for an upstream tool, connect to its upstream and use the tool's live readOnlyHint")
	test.Flags().BoolVar(&readOnly, "read-only", false, "treat the tool as annotated readOnlyHint (upstream tools without --connect)")
	cmd.AddCommand(test)
	return cmd
}

func decodeObject(s string, v *map[string]any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("expected a JSON object: %w", err)
	}
	// Agents' arguments arrive as float64; decode the same way.
	b, _ := json.Marshal(raw)
	return json.Unmarshal(b, v)
}

func printDecision(w io.Writer, d authz.Decision) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "decision:\t%s\n", d.Level)
	fmt.Fprintf(tw, "rules:\t%s\n", orNone(strings.Join(d.Rules, ", ")))
	fmt.Fprintf(tw, "reason:\t%s\n", d.Reason)
	if d.Level == vocab.LevelHigh || d.Level == vocab.LevelCritical {
		fmt.Fprintf(tw, "approvers:\t%s\n", strings.Join(d.Approvers, ", "))
		fmt.Fprintf(tw, "quorum:\t%d\n", d.Quorum)
		fmt.Fprintf(tw, "user verification:\t%s\n", d.UserVerification)
		fmt.Fprintf(tw, "timeout:\t%s\n", d.Timeout)
		fmt.Fprintf(tw, "wait:\t%s\n", d.Wait)
	}
	return tw.Flush()
}

func reportCases(w io.Writer, results []authz.CaseResult) error {
	failed := 0
	for i, r := range results {
		name := r.Case.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i)
		}
		if r.OK {
			fmt.Fprintf(w, "ok    %s: %s\n", name, r.Got.Level)
			continue
		}
		failed++
		fmt.Fprintf(w, "FAIL  %s: %s\n", name, r.Diff)
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d policy cases failed", failed, len(results))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none: the tool's base level)"
	}
	return s
}

// factSource asks the backends for the facts a tool's rules use, opening
// the database only when a case needs it. It writes nothing into the data
// directory: policy test is a dry run. It neither makes the directory nor
// writes the embedded default's demo files (PrepareDataDir), nor creates
// the database or seeds the ledger (tools.New): it reads what serve left.
// Before serve has made the database, the ledger is the one serve would
// start with, seeded from the configuration into a scratch database in
// the system's temporary directory, removed at close.
type factSource struct {
	c      *config.Config
	log    *slog.Logger
	db     *store.DB
	opened bool
	close  func()
}

func newFactSource(c *config.Config, log *slog.Logger) *factSource {
	return &factSource{c: c, log: log, close: func() {}}
}

func (f *factSource) lookup(ctx context.Context, tool string, args map[string]any) (map[string]any, error) {
	if len(tools.Facts()[tool]) == 0 {
		return nil, nil
	}
	if !f.opened {
		f.opened = true
		if file, ok := sqliteFile(f.c); !ok || fileExists(file) {
			db, err := daemon.OpenStore(ctx, f.c)
			if err != nil {
				return nil, err
			}
			f.db, f.close = db, func() { db.Close() }
		} else if err := f.scratchLedger(ctx); err != nil {
			return nil, err
		}
	}
	return tools.ReadFacts(ctx, f.c, f.db, tool, args)
}

// scratchLedger seeds the configuration's ledger into a database of its
// own in the temporary directory, as serve's first start would seed it.
func (f *factSource) scratchLedger(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "countersign-policy-test-")
	if err != nil {
		return err
	}
	db, err := store.Connect(ctx, filepath.Join(dir, store.FileName))
	if err == nil {
		_, err = ledger.Open(ctx, db, f.c.Ledger)
		if err != nil {
			db.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("the ledger as configured: %w", err)
	}
	f.db, f.close = db, func() { db.Close(); os.RemoveAll(dir) }
	return nil
}

// sqliteFile is the SQLite file of c's store, and false on PostgreSQL.
func sqliteFile(c *config.Config) (string, bool) {
	target := c.Store.Target(c.Server.DataDir, store.FileName)
	if strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://") {
		return "", false
	}
	return strings.TrimPrefix(target, "sqlite:"), true
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
