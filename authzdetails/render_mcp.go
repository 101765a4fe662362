package authzdetails

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Thresholds of the mcp_tool_call rendering's layout. None of them cuts
// anything: they decide only how a name or key is written.
const (
	mcpMaxKey     = 64  // characters of an object key written bare in a path; longer ones are quoted
	mcpMaxName    = 128 // characters of a server or tool name written bare; longer ones are quoted
	mcpMaxMarks   = 4   // combining marks in a row shown as they are; more are escaped
	mcpMaxRepeats = 3   // repeated-key paths named in the warning
)

// renderMCPToolCall renders an upstream MCP tool call,
//
//	{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{...}}
//
// as
//
//	Upstream tool: files / write_file
//	args.options.mode: 420
//	args.path: "/srv/share/a.txt"
//
// one line per leaf value in key order, labelled with its path below args
// (the name the policy rules use). Every value is shown in full, at every
// depth: the key signs this text, so nothing that runs may be missing
// from it (a call too large to show is refused before a request exists;
// see [ShowLimitError]).
//
// The rendering reads back to exactly one JSON value:
//   - A path is "args" followed by one segment per level: .name for an
//     object key that is a plain ASCII name (letters, digits, _ and -, at
//     most mcpMaxKey characters), ["quoted"] for any other key, [3] for
//     an array index. A plain name holds no ".", "[" or quote, and a
//     quoted key escapes its quotes and backslashes, so a path names one
//     sequence of keys and indexes; ["0"] (a key) is not [0] (an index).
//   - A string value is always in quotes, with every invisible, control,
//     bidi and line-breaking character written as an escape (\n, \t,
//     \u202E) and quote and backslash escaped, so each escape stands for
//     one character, the approver sees that it is there, and it cannot
//     forge or reorder a line. "1" and "null" (strings) read apart from 1
//     and null.
//   - A number is written exactly as sent; true, false and null bare.
//   - An empty object or array is a line of its own, {} or [], so that
//     {"a":{}}, {"a":[]} and {} all read apart.
//
// In a quoted key ": " is broken as \u003A so a key cannot end the label.
// Every label starts with "args", "detail" or a fixed word, so no key can
// pass itself off as a line the server writes (Code, Tool, Warning).
// A key that occurs twice in one object is shown every time, in the order
// written, under a warning: two readers of that JSON may take different
// values.
func renderMCPToolCall(raw json.RawMessage, sh *shown) []string {
	root, err := parseOrdered(raw)
	if err != nil || root.kind != kindObject {
		return []string{"Action: (unreadable authorization detail)"}
	}
	byKey := map[string][]*jvalue{}
	var other []jmember
	for _, m := range root.members {
		switch m.key {
		case "type": // the first line says what it is
		case "server", "tool", "arguments":
			byKey[m.key] = append(byKey[m.key], m.val)
		default:
			other = append(other, m)
		}
	}
	f := &flattener{sh: sh}
	f.repeats(root, nil)
	lines := []string{"Upstream tool: " + mcpName(byKey["server"], "server", sh) + " / " + mcpName(byKey["tool"], "tool", sh)}
	if len(f.repeated) > 0 {
		named := f.repeated[:min(len(f.repeated), mcpMaxRepeats)]
		w := WarningPrefix + "REPEATED KEY " + strings.Join(named, ", ")
		if n := len(f.repeated) - len(named); n > 0 {
			w += fmt.Sprintf(" and %d more", n)
		}
		lines = append(lines, w+"; every value is shown, a reader may take either")
	}
	args := byKey["arguments"]
	if len(args) == 0 || (len(args) == 1 && args[0].kind == kindObject && len(args[0].members) == 0) {
		lines = append(lines, "Arguments: (none)")
	} else {
		f.args = true
		for _, a := range args {
			f.flatten(a, "args", len("args"))
		}
		f.args = false
	}
	slices.SortStableFunc(other, func(a, b jmember) int { return strings.Compare(a.key, b.key) })
	for _, m := range other {
		label := "detail" + f.key(m.key)
		f.flatten(m.val, label, len(label))
	}
	return append(lines, f.lines...)
}

// renderArgs renders a tool's arguments as renderMCPToolCall does, for a
// request whose tool gave no authorization_details: what runs is shown
// even then.
func renderArgs(raw json.RawMessage, sh *shown) []string {
	root, err := parseOrdered(raw)
	if err != nil {
		return []string{"Arguments: (unreadable)"}
	}
	if root.kind == kindObject && len(root.members) == 0 {
		return []string{"Arguments: (none)"}
	}
	f := &flattener{sh: sh, args: true}
	f.flatten(root, "args", len("args"))
	return f.lines
}

// mcpName renders the server or tool name: bare when it is a plain name,
// else quoted like any string.
func mcpName(vs []*jvalue, what string, sh *shown) string {
	switch {
	case len(vs) == 0:
		return "(missing)"
	case len(vs) > 1:
		return fmt.Sprintf("(given %d times)", len(vs))
	case vs[0].kind != kindString:
		return "(not a string)"
	}
	s := vs[0].text
	sh.text(what, s)
	plain := s != "" && len(s) <= mcpMaxName
	for i := 0; plain && i < len(s); i++ {
		c := s[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-./", c) >= 0
	}
	if plain {
		return s
	}
	return visibleQuote(s, false)
}

type flattener struct {
	sh *shown
	// args says the values flattened now are arguments, which count
	// against MaxShownValues (the server's own detail members, such as a
	// pinned definition's hash, do not: the figure is the agent's).
	args     bool
	lines    []string
	repeated []string        // paths of repeated keys, in the order found
	named    map[string]bool // the set of repeated
}

// emit adds the line "label: value"; n is the label's length. Past
// MaxShownBytes the display is refused anyway: lines are then counted
// (for the error's figures) but no longer built, so that a long key
// above many values, repeated in every label, costs nothing to refuse.
func (f *flattener) emit(label string, n int, value string) {
	if f.args {
		f.sh.value()
	}
	if f.sh.line(n + len(": ") + len(value)) {
		f.lines = append(f.lines, label+": "+value)
	}
}

// key is the path segment of an object key, tallied as a text.
func (f *flattener) key(k string) string {
	f.sh.text("a key", k)
	return pathKey(k)
}

// join is path+seg, or "" once lines are only counted; n is the length
// of path+seg either way.
func (f *flattener) join(path string, n int, seg string) (string, int) {
	if f.sh.over() {
		return "", n + len(seg)
	}
	return path + seg, n + len(seg)
}

// flatten emits one line per leaf of v, labelled by its path (of length
// n).
func (f *flattener) flatten(v *jvalue, path string, n int) {
	switch v.kind {
	case kindObject:
		if len(v.members) == 0 {
			f.emit(path, n, "{}")
			return
		}
		members := slices.Clone(v.members)
		slices.SortStableFunc(members, func(a, b jmember) int { return strings.Compare(a.key, b.key) })
		for _, m := range members {
			p, pn := f.join(path, n, f.key(m.key))
			f.flatten(m.val, p, pn)
		}
	case kindArray:
		if len(v.elems) == 0 {
			f.emit(path, n, "[]")
			return
		}
		for i, e := range v.elems {
			p, pn := f.join(path, n, "["+strconv.Itoa(i)+"]")
			f.flatten(e, p, pn)
		}
	case kindString:
		f.sh.text(path, v.text)
		f.emit(path, n, visibleQuote(v.text, false))
	default: // number exactly as written, or true/false/null
		f.sh.text(path, v.text)
		f.emit(path, n, v.text)
	}
}

// repeats records the path of every object key that occurs more than once
// in v ("server", "args.path", "detail.x"). The path is kept as segments
// and joined only for a repeated key.
func (f *flattener) repeats(v *jvalue, path []string) {
	switch v.kind {
	case kindObject:
		seen := make(map[string]bool, len(v.members))
		for _, m := range v.members {
			var child []string
			switch {
			case len(path) == 0 && m.key == "arguments":
				child = []string{"args"}
			case len(path) == 0 && (m.key == "type" || m.key == "server" || m.key == "tool"):
				child = []string{m.key}
			case len(path) == 0:
				child = []string{"detail", pathKey(m.key)}
			default:
				child = append(path[:len(path):len(path)], pathKey(m.key))
			}
			if seen[m.key] {
				if p := strings.Join(child, ""); !f.named[p] {
					if f.named == nil {
						f.named = map[string]bool{}
					}
					f.named[p] = true
					f.repeated = append(f.repeated, p)
				}
			}
			seen[m.key] = true
			f.repeats(m.val, child)
		}
	case kindArray:
		for i, e := range v.elems {
			f.repeats(e, append(path[:len(path):len(path)], "["+strconv.Itoa(i)+"]"))
		}
	}
}

// pathKey is the path segment of an object key: .name for a plain ASCII
// name, else ["quoted"].
func pathKey(k string) string {
	plain := k != "" && len(k) <= mcpMaxKey
	for i := 0; plain && i < len(k); i++ {
		c := k[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if plain {
		return "." + k
	}
	return "[" + visibleQuote(k, true) + "]"
}

// visibleQuote quotes s, whole, for one display line. Quote and backslash
// are escaped, so every escape in the output stands for exactly one
// character of s; \n, \r and \t keep their usual names and every other
// character that would not be seen as itself (see Invisible) becomes
// \uXXXX or \UXXXXXXXX. In a key (inKey), a colon before a space is
// escaped so the key cannot contain the ": " that ends a display label.
func visibleQuote(s string, inKey bool) string {
	var b strings.Builder
	b.WriteByte('"')
	marks := 0
	for i, r := range s {
		if unicode.In(r, unicode.Mn, unicode.Me) {
			marks++
		} else {
			marks = 0
		}
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case inKey && r == ':' && strings.HasPrefix(s[i+1:], " "):
			b.WriteString(`\u003A`)
		case Invisible(r) || marks > mcpMaxMarks:
			if r <= 0xFFFF {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				fmt.Fprintf(&b, `\U%08X`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Invisible reports whether r would not be seen as itself on the page:
// controls (C0, DEL, C1), format characters (bidi controls and marks,
// zero-width space and joiners, word joiner, BOM, soft hyphen, U+180E, tag
// characters), line and paragraph separators, private-use, surrogate and
// unassigned code points, every space other than U+0020 (they look like
// it), variation selectors and the other default-ignorable characters
// (U+034F, Hangul fillers), and the blank braille pattern.
func Invisible(r rune) bool {
	if r == ' ' {
		return false
	}
	return !unicode.IsGraphic(r) ||
		unicode.In(r, unicode.Zs, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point) ||
		r == '\u2800'
}

// jvalue is a JSON value that keeps object members in the order written,
// repeated keys included (encoding/json would keep only the last).
type jvalue struct {
	kind    byte
	text    string // string value, number as written, true, false or null
	members []jmember
	elems   []*jvalue
}

type jmember struct {
	key string
	val *jvalue
}

const (
	kindObject byte = 'o'
	kindArray  byte = 'a'
	kindString byte = 's'
	kindOther  byte = '-'
)

func parseOrdered(raw []byte) (*jvalue, error) {
	if !json.Valid(raw) {
		return nil, errors.New("not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (*jvalue, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		v := &jvalue{kind: kindArray}
		switch t {
		case '{':
			v.kind = kindObject
		case '[':
		default:
			return nil, fmt.Errorf("unexpected %v", t)
		}
		for dec.More() {
			if v.kind == kindArray {
				e, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				v.elems = append(v.elems, e)
				continue
			}
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, ok := kt.(string)
			if !ok {
				return nil, errors.New("object key is not a string")
			}
			val, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			v.members = append(v.members, jmember{key, val})
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return v, nil
	case string:
		return &jvalue{kind: kindString, text: t}, nil
	case json.Number:
		return &jvalue{kind: kindOther, text: t.String()}, nil
	case bool:
		return &jvalue{kind: kindOther, text: strconv.FormatBool(t)}, nil
	case nil:
		return &jvalue{kind: kindOther, text: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}
