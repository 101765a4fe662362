package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
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

// unknownUpstreamTools names the policies under tools for upstream tools
// that their upstream does not offer: a typo there would otherwise leave
// the real tool on its default level without a word.
func unknownUpstreamTools(c *config.Config, cat *tools.Catalog) []error {
	var errs []error
	names := make([]string, 0, len(c.Tools))
	for name := range c.Tools {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		u, ok := c.UpstreamOf(name)
		if !ok {
			continue
		}
		if _, ok := cat.Lookup(name); ok {
			continue
		}
		var offered []string
		for _, s := range cat.Specs() {
			if s.Source == u.Name {
				offered = append(offered, s.Def.Name)
			}
		}
		errs = append(errs, &config.Error{Source: c.Source, Path: "tools." + name,
			Msg: fmt.Sprintf("upstream %s offers no tool %q (it offers: %s)", u.Name,
				strings.TrimPrefix(name, u.Prefix), strings.Join(offered, ", "))})
	}
	return errs
}
