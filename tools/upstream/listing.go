package upstream

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/countersign/countersign/tools"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// list reads the upstream's whole tool list and makes it the upstream's
// contribution to the catalog.
func (c *conn) list(ctx context.Context, session *sdk.ClientSession) error {
	if err := c.fetch(ctx, session); err != nil {
		return err
	}
	return c.settle(ctx, true)
}

// fetch reads the upstream's whole tool list into c.listing.
func (c *conn) fetch(ctx context.Context, session *sdk.ClientSession) error {
	var all []*sdk.Tool
	params := &sdk.ListToolsParams{}
	for page := 0; ; page++ {
		if page == maxListPages {
			return fmt.Errorf("tool list has more than %d pages", maxListPages)
		}
		res, err := session.ListTools(ctx, params)
		if err != nil {
			return fmt.Errorf("listing tools: %w", err)
		}
		all = append(all, res.Tools...)
		if len(all) > maxTools {
			return fmt.Errorf("more than %d tools", maxTools)
		}
		if res.NextCursor == "" {
			break
		}
		params = &sdk.ListToolsParams{Cursor: res.NextCursor}
	}
	listing, err := describe(c.cfg, all)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.listing = listing
	c.mu.Unlock()
	return nil
}

// settle compares the last listing with the pins and offers the tools
// whose listing matches their pin; the others are held. With relisted
// false (a re-read of the pins) the catalog is touched only if what is
// offered or held changed.
func (c *conn) settle(ctx context.Context, relisted bool) error {
	c.settleMu.Lock()
	defer c.settleMu.Unlock()
	c.mu.Lock()
	listing, retired := c.listing, c.retired
	c.mu.Unlock()
	if retired {
		return nil // a reload took its tools out of the catalog, or gave them to its successor
	}
	changes, err := c.compare(ctx, listing)
	if err != nil && !relisted {
		// A re-read that failed (the caller went away, the database is
		// busy) changes nothing: what is offered still matches its pin.
		return fmt.Errorf("pinned tool definitions: %w", err)
	}
	if err != nil {
		// Fail closed: a new listing that cannot be compared with the
		// pins offers nothing.
		c.mu.Lock()
		c.offered, c.held, c.tools = nil, nil, 0
		c.mu.Unlock()
		c.m.cat.Replace(c.cfg.Name, nil)
		return fmt.Errorf("pinned tool definitions: %w", err)
	}
	byTool := make(map[string]Change, len(changes))
	for _, ch := range changes {
		byTool[ch.Tool] = ch
	}
	specs := make([]*tools.Spec, 0, len(listing))
	offered := make(map[string]string, len(listing))
	held := map[string]Change{}
	for _, l := range listing {
		tool := l.pin.Tool
		if ch, ok := byTool[tool]; ok {
			held[tool] = ch
			specs = append(specs, heldSpec(c.cfg.Name, l.def, ch, func(ctx context.Context) error { return c.release(ctx, tool) }))
			continue
		}
		offered[tool] = l.pin.SHA256
		specs = append(specs, spec(c.cfg.Name, tool, l.def, l.pin.SHA256, c.call, c.pinned))
	}
	c.mu.Lock()
	same := maps.Equal(offered, c.offered) && maps.EqualFunc(held, c.held, func(a, b Change) bool { return a.Listed == b.Listed })
	c.offered, c.held, c.tools = offered, held, len(offered)
	c.mu.Unlock()
	if same && !relisted {
		return nil
	}
	for _, ch := range changes {
		c.log.Warn("upstream tool differs from its pinned definition; held until an admin accepts it",
			"tool", ch.Exposed, "what", strings.Join(ch.What, ","), "pinned_sha256", ch.Pinned, "listed_sha256", ch.Listed, "policy", ch.Policy)
	}
	return c.m.cat.Replace(c.cfg.Name, specs)
}

// compare reads the pins (pinning the listing on a first connection) and
// returns how the listing differs from them, recorded.
func (c *conn) compare(ctx context.Context, listing []listedTool) ([]Change, error) {
	if c.m.pins == nil {
		return nil, nil
	}
	listed := make([]Pin, len(listing))
	for i, l := range listing {
		listed[i] = l.pin
	}
	pins, err := c.m.pins.Pinned(ctx, c.cfg.Name)
	if err != nil {
		return nil, err
	}
	if len(pins) == 0 && len(listed) > 0 {
		if err := c.m.pins.PinFirst(ctx, c.cfg.Name, listed); err != nil {
			return nil, err
		}
		c.log.Info("first connection: pinned every tool's definition", "tools", len(listed))
		return nil, nil
	}
	changes := Compare(pins, listed, *c.m.policy.Load())
	if len(changes) > 0 {
		if err := c.m.pins.Changed(ctx, c.cfg.Name, changes); err != nil {
			return nil, err
		}
	}
	return changes, nil
}

// pinned returns the hash of the definition tool's calls may run under
// now, or "" when it is not offered.
func (c *conn) pinned(tool string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offered[tool]
}

// release reads the pins again for a call of a held tool: an admin may
// have accepted its listing meanwhile, from another process.
func (c *conn) release(ctx context.Context, tool string) error {
	if err := c.settle(ctx, false); err != nil {
		return fmt.Errorf("upstream %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	ch, held := c.held[tool]
	_, offered := c.offered[tool]
	c.mu.Unlock()
	switch {
	case held:
		return &HeldError{Server: c.cfg.Name, Change: ch}
	case !offered:
		return fmt.Errorf("tool %s of upstream %s is no longer listed", tool, c.cfg.Name)
	}
	return nil
}

// offeredCount is how many of the upstream's tools are offered.
func (c *conn) offeredCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tools
}

// hasHeld reports whether any tool of the upstream is held.
func (c *conn) hasHeld() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held) > 0
}
