package authzdetails

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// What an approver can be shown in full. The key signs the display text
// (its SHA-256 is in the digest), so the display holds every argument the
// backend receives, whole; a call whose arguments would not fit is
// refused before any request is raised ([ShowLimitError]), never shown
// in part. The figures are for a person reading a phone: about forty
// characters a line and a thousand a screen, so one value is at most two
// screens, and the whole text about sixteen screens.
const (
	// MaxShownValues bounds the argument values (one display line each: a
	// string, number, true, false, null, {} or []) of all the details
	// together, with the fields of a detail of a type rendered generically.
	MaxShownValues = 100
	// MaxShownChars bounds the characters of one value or object key.
	MaxShownChars = 2000
	// MaxShownBytes bounds the whole display text, escapes included.
	MaxShownBytes = 16 << 10
)

// Two sets of figures bound an mcp_tool_call's arguments, on purpose.
// These limits are what the approver can be shown whole, and every
// request meets them (the guard refuses an MCP call over them before a
// request exists, and approval's Create refuses any request over them,
// a CIBA one included). A CIBA client's authorization_details
// must also keep within ciba's narrower figures (60 values, 8 levels,
// strings of 200 characters, keys of 64: ciba/details.go), checked before
// the guard: those are a published part of the CIBA contract
// (docs/ciba.md) that clients and a test rely on, and widening them to
// these would admit requests that are refused today. Both apply to a CIBA
// request; only these apply to an MCP call.

// ErrTooLargeToShow is the sentinel under every [ShowLimitError].
var ErrTooLargeToShow = errors.New("arguments too large to show the approver in full")

// ShowLimitError says which of the limits above a call's arguments
// exceed, and by how much: the agent reads it as its tool error.
type ShowLimitError struct {
	Values    int    // values to show
	Longest   int    // characters of the longest value or key
	LongestAt string // the display label it is under ("" past MaxShownBytes, where labels are not built)
	Bytes     int    // bytes of the display text
}

func (e *ShowLimitError) Error() string {
	var over []string
	if e.Values > MaxShownValues {
		over = append(over, fmt.Sprintf("%d values, at most %d", e.Values, MaxShownValues))
	}
	if e.Longest > MaxShownChars {
		at := e.LongestAt
		if utf8.RuneCountInString(at) > 80 {
			at = string([]rune(at)[:80]) + "…"
		}
		if at != "" {
			at = " (" + at + ")"
		}
		over = append(over, fmt.Sprintf("a value of %d characters%s, at most %d", e.Longest, at, MaxShownChars))
	}
	if e.Bytes > MaxShownBytes {
		over = append(over, fmt.Sprintf("%d bytes of text, at most %d", e.Bytes, MaxShownBytes))
	}
	return ErrTooLargeToShow.Error() + ": " + strings.Join(over, "; ") +
		" (the approver's key signs every argument, so none may be left out; send less, e.g. split the call)"
}

func (e *ShowLimitError) Unwrap() error { return ErrTooLargeToShow }

// shown tallies, while a display is rendered, what the limits count.
type shown struct {
	values    int
	longest   int
	longestAt string
	bytes     int // of the value lines so far, built or not
	dropped   int // of the value lines not built, newlines included
}

// line tallies a value line of n bytes and reports whether to build it:
// not once the lines alone are over MaxShownBytes, the display is then
// refused whatever follows.
func (s *shown) line(n int) bool {
	s.bytes += n + 1
	if s.bytes > MaxShownBytes {
		s.dropped += n + 1
		return false
	}
	return true
}

// over reports whether lines are only counted now.
func (s *shown) over() bool { return s.bytes > MaxShownBytes }

func (s *shown) value() { s.values++ }

// text tallies one value or key, under the display label at.
func (s *shown) text(at, v string) {
	if n := utf8.RuneCountInString(v); n > s.longest {
		s.longest, s.longestAt = n, at
	}
}

// check returns a *ShowLimitError when a display of size bytes (and the
// lines not built), with the tallies, is over any limit.
func (s *shown) check(size int) error {
	size += s.dropped
	if s.values <= MaxShownValues && s.longest <= MaxShownChars && size <= MaxShownBytes {
		return nil
	}
	return &ShowLimitError{Values: s.values, Longest: s.longest, LongestAt: s.longestAt, Bytes: size}
}
