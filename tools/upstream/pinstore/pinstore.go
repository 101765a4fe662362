// Package pinstore keeps the pinned definitions of upstream MCP tools
// (see package upstream) in Countersign's SQLite database, and records in
// the audit log what happens to them: tool.pinned when an upstream's tools
// are first pinned, tool.changed once per change of a listing, and
// tool.accepted when an admin pins a new definition.
//
// Each entry carries in result:
//
//	{"server": "notes", "upstream_tool": "write_note",
//	 "definition_sha256": "<hex>",  the definition pinned, listed or accepted; "" for a removed tool
//	 "previous_sha256": "<hex>",    tool.changed, tool.accepted: the pin before; "" for a new tool
//	 "changed": ["annotations"],    tool.changed, tool.accepted: what differs ("new", "removed", "schema", "annotations", "description")
//	 "policy": "tools.notes__rug",  a removed tool whose policy now names no tool
//	 "accepted_by": "alice"}        tool.accepted: the OS user who ran the command
//
// Each entry is appended before the table changes, so a crash in between
// leaves an entry without its effect (recorded again next time), never an
// effect without its entry.
package pinstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/vocab"
)

// Recorder appends to the audit log.
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Store is the pins of every upstream. It implements upstream.Pins.
type Store struct {
	db  *store.DB
	rec Recorder
}

const schema = `
CREATE TABLE IF NOT EXISTS upstream_pins (
	server     TEXT NOT NULL,
	tool       TEXT NOT NULL,    -- the upstream's own name
	exposed    TEXT NOT NULL,    -- the name agents see
	sha256     TEXT NOT NULL,    -- hex SHA-256 of definition
	definition TEXT NOT NULL,    -- the pinned members, RFC 8785 JSON
	pinned_at  INTEGER NOT NULL, -- Unix nanoseconds
	PRIMARY KEY (server, tool)
) STRICT;
CREATE TABLE IF NOT EXISTS upstream_pin_changes (
	server     TEXT NOT NULL,
	tool       TEXT NOT NULL,
	pinned     TEXT NOT NULL,    -- hash of the pin; '' for a new tool
	listed     TEXT NOT NULL,    -- hash of the listing; '' for a removed tool
	definition TEXT,             -- as listed; NULL when removed
	seen_at    INTEGER NOT NULL,
	PRIMARY KEY (server, tool, pinned, listed)
) STRICT;
`

// Open creates the tables if needed.
func Open(ctx context.Context, db *store.DB, rec Recorder) (*Store, error) {
	if err := db.CreateTables(ctx, schema); err != nil {
		return nil, fmt.Errorf("pinstore: %w", err)
	}
	return &Store{db: db, rec: rec}, nil
}

// Pinned returns server's pins by the upstream's tool name.
func (s *Store) Pinned(ctx context.Context, server string) (map[string]upstream.Pin, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT tool, exposed, sha256, definition FROM upstream_pins WHERE server = ?`, server)
	if err != nil {
		return nil, fmt.Errorf("pinstore: %w", err)
	}
	defer rows.Close()
	out := map[string]upstream.Pin{}
	for rows.Next() {
		var p upstream.Pin
		var def string
		if err := rows.Scan(&p.Tool, &p.Exposed, &p.SHA256, &def); err != nil {
			return nil, fmt.Errorf("pinstore: %w", err)
		}
		p.Definition = json.RawMessage(def)
		out[p.Tool] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pinstore: %w", err)
	}
	return out, nil
}

// PinFirst pins every listed tool of server, which has no pins yet.
func (s *Store) PinFirst(ctx context.Context, server string, listed []upstream.Pin) error {
	for _, p := range listed {
		err := s.record(ctx, vocab.KindToolPinned, p.Exposed, "pinned on the upstream's first connection", map[string]any{
			"server": server, "upstream_tool": p.Tool, "definition_sha256": p.SHA256,
		})
		if err != nil {
			return err
		}
		if err := s.pin(ctx, server, p); err != nil {
			return err
		}
	}
	return nil
}

// Changed records each change not recorded before.
func (s *Store) Changed(ctx context.Context, server string, changes []upstream.Change) error {
	for _, c := range changes {
		var seen int
		err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM upstream_pin_changes WHERE server = ? AND tool = ? AND pinned = ? AND listed = ?`,
			server, c.Tool, c.Pinned, c.Listed).Scan(&seen)
		if err != nil {
			return fmt.Errorf("pinstore: %w", err)
		}
		if seen > 0 {
			continue
		}
		if err := s.record(ctx, vocab.KindToolChanged, c.Exposed, c.Describe(server), changeResult(server, c, "")); err != nil {
			return err
		}
		var def any
		if c.Definition != nil {
			def = string(c.Definition)
		}
		_, err = s.db.ExecContext(ctx, `INSERT INTO upstream_pin_changes (server, tool, pinned, listed, definition, seen_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, server, c.Tool, c.Pinned, c.Listed, def, time.Now().UnixNano())
		if err != nil {
			return fmt.Errorf("pinstore: %w", err)
		}
	}
	return nil
}

// ErrNothingToAccept says the listing matches the pins.
var ErrNothingToAccept = errors.New("nothing to accept")

// Accept pins what server lists now: of every tool that differs from its
// pin, or of tool alone (the upstream's name or the exposed one) when it
// is not "". A removed tool's pin is dropped. Each is recorded as
// tool.accepted, by actor. It returns what it accepted.
func (s *Store) Accept(ctx context.Context, server string, listed []upstream.Pin, tool, actor string) ([]upstream.Change, error) {
	pins, err := s.Pinned(ctx, server)
	if err != nil {
		return nil, err
	}
	var accepted []upstream.Change
	for _, c := range upstream.Compare(pins, listed, nil) {
		if tool == "" || tool == c.Tool || tool == c.Exposed {
			accepted = append(accepted, c)
		}
	}
	if len(accepted) == 0 {
		if tool != "" {
			return nil, fmt.Errorf("%w: upstream %s lists tool %s as it is pinned, or neither lists nor pinned it", ErrNothingToAccept, server, tool)
		}
		return nil, fmt.Errorf("%w: every tool upstream %s lists is as it is pinned", ErrNothingToAccept, server)
	}
	byTool := map[string]upstream.Pin{}
	for _, p := range listed {
		byTool[p.Tool] = p
	}
	for _, c := range accepted {
		reason := fmt.Sprintf("%s accepted by %s", c.Describe(server), actor)
		if err := s.record(ctx, vocab.KindToolAccepted, c.Exposed, reason, changeResult(server, c, actor)); err != nil {
			return nil, err
		}
		if c.Listed == "" {
			_, err = s.db.ExecContext(ctx, `DELETE FROM upstream_pins WHERE server = ? AND tool = ?`, server, c.Tool)
		} else {
			err = s.pin(ctx, server, byTool[c.Tool])
		}
		if err != nil {
			return nil, fmt.Errorf("pinstore: %w", err)
		}
	}
	return accepted, nil
}

func changeResult(server string, c upstream.Change, actor string) map[string]any {
	r := map[string]any{
		"server": server, "upstream_tool": c.Tool,
		"definition_sha256": c.Listed, "previous_sha256": c.Pinned, "changed": c.What,
	}
	if c.Policy != "" {
		r["policy"] = c.Policy
	}
	if actor != "" {
		r["accepted_by"] = actor
	}
	return r
}

func (s *Store) pin(ctx context.Context, server string, p upstream.Pin) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO upstream_pins (server, tool, exposed, sha256, definition, pinned_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (server, tool) DO UPDATE SET exposed = excluded.exposed, sha256 = excluded.sha256,
			definition = excluded.definition, pinned_at = excluded.pinned_at`,
		server, p.Tool, p.Exposed, p.SHA256, string(p.Definition), time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("pinstore: %w", err)
	}
	return nil
}

func (s *Store) record(ctx context.Context, kind vocab.Kind, tool, reason string, result map[string]any) error {
	raw, err := json.Marshal(result)
	if err != nil {
		return err
	}
	if _, err := s.rec.Append(ctx, audit.Entry{Kind: kind, Tool: tool, Reason: reason, Result: raw}); err != nil {
		return fmt.Errorf("pinstore: recording %s of %s: %w", kind, tool, err)
	}
	return nil
}
