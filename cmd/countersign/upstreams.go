package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/countersign/countersign/store"

	"github.com/aymanbagabas/go-udiff"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/pinstore"
	"github.com/spf13/cobra"
)

// warnings logs what a command that is not serve should still say:
// warnings and errors, on stderr.
func warnings(cmd *cobra.Command) *slog.Logger {
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// connectUpstreams connects to every upstream of c, each treated as
// required, for commands that check the configuration against the tools
// the upstreams really offer.
func connectUpstreams(ctx context.Context, c *config.Config, log *slog.Logger) (*tools.Catalog, func(), error) {
	ups := slices.Clone(c.Upstreams)
	for i := range ups {
		ups[i].Required = true
	}
	cat := tools.NewCatalog()
	m, err := upstream.Start(ctx, ups, cat, upstream.Options{Logger: log, Version: buildVersion()})
	if err != nil {
		return nil, nil, err
	}
	return cat, func() { m.Close() }, nil
}

func newUpstreamsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upstreams",
		Short: "Show and accept changes of upstream MCP servers' tools",
		Long: `Serve pins the definition of every tool of an upstream when it first connects
to it (name, title, description, input and output schemas, annotations). A tool
listed later with another definition, a new tool and a removed one are recorded
in the audit log (tool.changed) and the changed or new tool is held: agents are
not offered it and its calls are refused, until an admin accepts the listing.`,
	}
	diff := &cobra.Command{
		Use:   "diff SERVER",
		Short: "Connect to an upstream and show how its tools differ from their pins",
		Long: `Diff connects to the upstream SERVER as serve does and prints, for each tool
whose listing differs from its pin, the pinned and listed definitions as a
unified diff of their JSON. It exits 0 when every tool is as pinned, 1 when
any differs (like diff(1)), 2 when the configuration is wrong.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withPins(cmd, args[0], func(ctx context.Context, c *config.Config, st *pinstore.Store, listed []upstream.Pin) error {
				pins, err := st.Pinned(ctx, args[0])
				if err != nil {
					return err
				}
				changes := upstream.Compare(pins, listed, func(n string) bool { _, ok := c.Tools[n]; return ok })
				out := cmd.OutOrStdout()
				if len(pins) == 0 {
					fmt.Fprintf(out, "upstream %s: nothing pinned yet (serve pins every tool on its first connection; accept pins them now)\n", args[0])
				}
				if len(changes) == 0 {
					fmt.Fprintf(out, "upstream %s: all %d tools are as pinned\n", args[0], len(listed))
					return nil
				}
				for _, ch := range changes {
					fmt.Fprintf(out, "%s\n  pinned sha256: %s\n  listed sha256: %s\n", ch.Describe(args[0]), hashOrNone(ch.Pinned), hashOrNone(ch.Listed))
					fmt.Fprint(out, udiff.Unified("pinned "+ch.Tool, "listed "+ch.Tool, indentJSON(pins[ch.Tool].Definition), indentJSON(ch.Definition)))
				}
				return &exitError{exitFail, fmt.Errorf("upstream %s: %d tools differ from their pins; accept them with `countersign upstreams accept %s [TOOL]`",
					args[0], len(changes), args[0])}
			})
		},
	}
	accept := &cobra.Command{
		Use:   "accept SERVER [TOOL]",
		Short: "Pin the definitions an upstream lists now: of every changed tool, or of TOOL",
		Long: `Accept connects to the upstream SERVER as serve does and pins what it lists
now: every tool that differs from its pin, or TOOL alone (the upstream's name or
the exposed one). A removed tool's pin is dropped. Each is recorded in the audit
log as tool.accepted, naming the OS user who ran the command. A running serve
offers an accepted tool again within seconds, without a restart.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tool := ""
			if len(args) == 2 {
				tool = args[1]
			}
			return withPins(cmd, args[0], func(ctx context.Context, _ *config.Config, st *pinstore.Store, listed []upstream.Pin) error {
				accepted, err := st.Accept(ctx, args[0], listed, tool, cliActor())
				if errors.Is(err, pinstore.ErrNothingToAccept) && tool == "" {
					// Accepting a server whose listing matches its pins is
					// already done: a script that runs accept after a
					// deploy must not fail for it. A named tool that is
					// neither listed nor pinned stays an error (a typo).
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					return nil
				}
				if err != nil {
					return err
				}
				for _, ch := range accepted {
					fmt.Fprintf(cmd.OutOrStdout(), "accepted: %s (now pinned: %s)\n", ch.Describe(args[0]), hashOrNone(ch.Listed))
				}
				return nil
			})
		},
	}
	cmd.AddCommand(diff, accept)
	return cmd
}

// withPins opens the pins in the data directory's database and connects
// to the upstream called server, for one command.
func withPins(cmd *cobra.Command, server string, fn func(context.Context, *config.Config, *pinstore.Store, []upstream.Pin) error) error {
	c, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(c.Upstreams, func(u config.Upstream) bool { return u.Name == server })
	if i < 0 {
		var names []string
		for _, u := range c.Upstreams {
			names = append(names, u.Name)
		}
		return configError(fmt.Errorf("%s: no upstream %q (upstreams: %s)", c.Source, server, strings.Join(names, ", ")))
	}
	return withLog(cmd, c, func(ctx context.Context, db *store.DB, log *audit.Log) error {
		st, err := pinstore.Open(ctx, db, log)
		if err != nil {
			return err
		}
		u := c.Upstreams[i]
		u.Required = true
		m, err := upstream.Start(ctx, []config.Upstream{u}, tools.NewCatalog(), upstream.Options{Logger: warnings(cmd), Version: buildVersion()})
		if err != nil {
			return err
		}
		defer m.Close()
		listed, _ := m.Listed(server)
		return fn(ctx, c, st, listed)
	})
}

// hashOrNone shows a definition hash, "" being no definition.
func hashOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// indentJSON is a definition as indented JSON, for a diff; "" for none.
func indentJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw) + "\n"
	}
	return b.String() + "\n"
}
