package store

import (
	"context"
	"database/sql/driver"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/stdlib"
)

// The project's statements are written once, for both engines, with
// SQLite's `?` placeholders. PostgreSQL numbers its parameters ($1, $2,
// ...), so every statement sent to it is rewritten on the way: each `?`
// in the SQL text becomes the next $n. A `?` inside a string literal
// ('…', E'…', $tag$…$tag$), a quoted identifier ("…") or a comment is
// text, not a parameter, and is left alone. PostgreSQL's jsonb operators
// `?`, `?|` and `?&` cannot be written through this seam; the project
// uses none.

// rewritePlaceholders returns query with each parameter `?` replaced by
// $1, $2, ... in order, and how many it replaced.
func rewritePlaceholders(query string) (string, int) {
	if strings.IndexByte(query, '?') < 0 {
		return query, 0
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); {
		j := next(query, i)
		if j == i { // a parameter
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			i++
			continue
		}
		b.WriteString(query[i:j])
		i = j
	}
	return b.String(), n
}

// next returns where the token at i ends: i itself when query[i] is a
// parameter `?`, else the end of the literal, identifier or comment that
// starts at i, or i+1 for any other byte.
func next(query string, i int) int {
	c := query[i]
	switch {
	case c == '?':
		return i
	case c == '\'':
		return skipString(query, i, escapeString(query, i))
	case c == '"':
		return skipPast(query, i+1, `"`)
	case c == '-' && strings.HasPrefix(query[i:], "--"):
		return skipPast(query, i+2, "\n")
	case c == '/' && strings.HasPrefix(query[i:], "/*"):
		return skipComment(query, i)
	case c == '$' && !followsWord(query, i):
		return skipDollarQuoted(query, i)
	}
	return i + 1
}

// skipPast returns the index just past the first end at or after i, or
// len(s) when there is none (the rest is inside the literal).
func skipPast(s string, i int, end string) int {
	k := strings.Index(s[i:], end)
	if k < 0 {
		return len(s)
	}
	return i + k + len(end)
}

// skipString returns the index past the string literal opening at i. A
// doubled quote (”) ends one literal and opens the next, which is the
// same text either way. In an escape string (E'…') a backslash takes the
// next byte with it.
func skipString(s string, i int, backslash bool) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case '\'':
			return j + 1
		}
	}
	return len(s)
}

// escapeString reports whether the quote at i opens an E'…' literal.
func escapeString(s string, i int) bool {
	return i > 0 && (s[i-1] == 'E' || s[i-1] == 'e') && !followsWord(s, i-1)
}

// skipComment returns the index past the block comment opening at i;
// PostgreSQL's block comments nest.
func skipComment(s string, i int) int {
	depth := 0
	for j := i; j < len(s); {
		switch {
		case strings.HasPrefix(s[j:], "/*"):
			depth++
			j += 2
		case strings.HasPrefix(s[j:], "*/"):
			depth--
			j += 2
			if depth == 0 {
				return j
			}
		default:
			j++
		}
	}
	return len(s)
}

// skipDollarQuoted returns the index past the $tag$…$tag$ literal opening
// at i, or i+1 when the `$` at i opens none (a parameter such as $1).
func skipDollarQuoted(s string, i int) int {
	j := i + 1
	for j < len(s) && (s[j] == '_' || isLetter(s[j]) || (j > i+1 && isDigit(s[j]))) {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		return i + 1
	}
	tag := s[i : j+1]
	return skipPast(s, j+1, tag)
}

// followsWord reports whether the byte at i continues an identifier or
// a number (a$b, x1$), so that it opens nothing.
func followsWord(s string, i int) bool {
	if i == 0 {
		return false
	}
	c := s[i-1]
	return c == '_' || c == '$' || isLetter(c) || isDigit(c) || c >= 0x80
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' || c >= 0x80 }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// pgConnector opens pgx's database/sql connections, wrapped to rewrite
// placeholders.
type pgConnector struct{ inner driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	inner, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return pgConn{inner.(*stdlib.Conn)}, nil
}

func (c pgConnector) Driver() driver.Driver { return c.inner.Driver() }

// pgConn is pgx's connection with every statement's placeholders
// rewritten; it keeps offering each interface of pgx's that database/sql
// uses.
type pgConn struct{ *stdlib.Conn }

var (
	_ driver.ConnBeginTx        = pgConn{}
	_ driver.ConnPrepareContext = pgConn{}
	_ driver.ExecerContext      = pgConn{}
	_ driver.QueryerContext     = pgConn{}
	_ driver.Pinger             = pgConn{}
	_ driver.SessionResetter    = pgConn{}
	_ driver.NamedValueChecker  = pgConn{}
)

// CheckNamedValue sends a Go bool as 1 or 0: the project's flags are
// INTEGER columns, as SQLite keeps them, and pgx encodes no bool as an
// integer.
func (c pgConn) CheckNamedValue(nv *driver.NamedValue) error {
	if b, ok := nv.Value.(bool); ok {
		nv.Value = int64(0)
		if b {
			nv.Value = int64(1)
		}
		return nil
	}
	return c.Conn.CheckNamedValue(nv)
}

func (c pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	q, _ := rewritePlaceholders(query)
	return c.Conn.PrepareContext(ctx, q)
}

func (c pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	q, _ := rewritePlaceholders(query)
	return c.Conn.ExecContext(ctx, q, args)
}

func (c pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, _ := rewritePlaceholders(query)
	return c.Conn.QueryContext(ctx, q, args)
}
