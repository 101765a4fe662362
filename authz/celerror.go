package authz

import (
	"fmt"
	"regexp"
	"strings"

	"cel.dev/cel-go/cel"
)

// celErrors says what is wrong with a rule's condition in plain words, one
// clause per problem on one line: which rule (rule is its name, "" for a
// grant condition), where (line, when the condition has several, and
// column, counted from 1, with the text there) and what, rather than the
// parser's grammar talk ("mismatched input '<EOF>' expecting {'[', …").
// A syntax error usually sets off more that only echo it, so only the
// first syntax error is reported; every type error is.
func celErrors(rule, expr string, iss *cel.Issues) string {
	var parts []string
	syntax := false
	for _, e := range iss.Errors() {
		msg, isSyntax := strings.CutPrefix(e.Message, "Syntax error: ")
		if isSyntax && syntax {
			continue
		}
		syntax = syntax || isSyntax
		line, col := e.Location.Line(), e.Location.Column()
		parts = append(parts, where(rule, expr, line, col)+": "+plainCEL(msg))
	}
	if len(parts) == 0 {
		return iss.Err().Error()
	}
	return strings.Join(parts, "; ")
}

// where names the place of a problem: rule "large", column 15 (at "> 5").
func where(rule, expr string, line, col int) string {
	var b strings.Builder
	if rule != "" && !strings.HasPrefix(rule, "rules[") { // unnamed: the key path says which
		fmt.Fprintf(&b, "rule %q, ", rule)
	}
	lines := strings.Split(expr, "\n")
	if len(lines) > 1 {
		fmt.Fprintf(&b, "line %d, ", line)
	}
	fmt.Fprintf(&b, "column %d", col+1)
	text := ""
	if line >= 1 && line <= len(lines) {
		if r := []rune(lines[line-1]); col >= 0 && col < len(r) {
			text = strings.TrimSpace(string(r[col:min(len(r), col+20)]))
		}
	}
	if text == "" {
		b.WriteString(" (the end)")
	} else {
		fmt.Fprintf(&b, " (at %q)", text)
	}
	return b.String()
}

var (
	reMismatched = regexp.MustCompile(`^(?:mismatched|extraneous) input '(.*)' expecting (.*)$`)
	reMissing    = regexp.MustCompile(`^missing '(.*)' at '(.*)'$`)
	reToken      = regexp.MustCompile(`^token recognition error at: '(.*)'$`)
	reNoViable   = regexp.MustCompile(`^no viable alternative at input '(.*)'$`)
	reUndeclared = regexp.MustCompile(`^undeclared reference to '([^']*)'(.*)$`)
	reUndefined  = regexp.MustCompile(`^undefined field '([^']*)'$`)
	reOverload   = regexp.MustCompile(`^found no matching overload for '([^']*)' applied to '\((.*)\)'$`)
)

// operators maps CEL's internal names of operators to how they are written.
var operators = map[string]string{
	"_==_": "==", "_!=_": "!=", "_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">=",
	"_+_": "+", "_-_": "-", "_*_": "*", "_/_": "/", "_%_": "%", "_&&_": "&&", "_||_": "||",
	"!_": "!", "-_": "-", "@in": "in", "_[_]": "[ ]", "_?_:_": "? :",
}

// wordOperators are what people write for CEL's operators.
var wordOperators = map[string]string{"and": "&&", "or": "||", "not": "!", "AND": "&&", "OR": "||", "NOT": "!"}

// plainCEL rewrites one CEL parser or checker message in plain words; a
// message it does not know is kept as CEL wrote it.
func plainCEL(msg string) string {
	if m := reMismatched.FindStringSubmatch(msg); m != nil {
		got, want := m[1], m[2]
		switch {
		case got == "<EOF>" && strings.Contains(want, "IDENTIFIER"):
			return "the condition ends where a value or name should follow"
		case got == "<EOF>":
			return "the condition ends too soon: expected " + expected(want)
		case wordOperators[got] != "":
			return fmt.Sprintf("%q is not a CEL operator: write %s", got, wordOperators[got])
		case want == "<EOF>":
			return fmt.Sprintf("%q was not expected here: the condition looks complete before it", got)
		case strings.Contains(want, "IDENTIFIER"):
			return fmt.Sprintf("%q was not expected here: a value or name should come first", got)
		}
		return fmt.Sprintf("%q was not expected here: expected %s", got, expected(want))
	}
	if m := reMissing.FindStringSubmatch(msg); m != nil {
		if m[2] == "<EOF>" {
			return fmt.Sprintf("a closing %q is missing at the end", m[1])
		}
		return fmt.Sprintf("%q is missing before %q", m[1], m[2])
	}
	if m := reToken.FindStringSubmatch(msg); m != nil {
		got := strings.TrimSpace(m[1])
		switch {
		case strings.HasPrefix(got, "'") || strings.HasPrefix(got, `"`):
			return "a string is not closed: its closing quote is missing"
		case strings.HasPrefix(got, "=>"):
			return `"=>" is not a CEL operator: write >= for at least`
		case strings.HasPrefix(got, "="):
			return `a single "=" is not a CEL operator: write == to compare`
		case strings.HasPrefix(got, "|"):
			return `a single "|" is not a CEL operator: write || for or`
		case strings.HasPrefix(got, "&"):
			return `a single "&" is not a CEL operator: write && for and`
		}
		return fmt.Sprintf("%q is not part of CEL's syntax", got)
	}
	if m := reNoViable.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("cannot make sense of %q", m[1])
	}
	if m := reUndeclared.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("unknown name %q%s: a rule can use args, agent, tool, now, usage and its tool's facts", m[1], m[2])
	}
	if m := reUndefined.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("there is no field %q", m[1])
	}
	if m := reOverload.FindStringSubmatch(msg); m != nil {
		op, isOp := operators[m[1]]
		if t := topLevel(m[2]); len(t) == 2 && isOp {
			return fmt.Sprintf("%s cannot combine %s with %s", op, article(t[0]), article(t[1]))
		}
		if isOp {
			return fmt.Sprintf("%s cannot be applied to %s", op, m[2])
		}
		return fmt.Sprintf("%s() cannot be applied to %s", m[1], m[2])
	}
	return msg
}

// expected renders the parser's expected-token set ({']', ','}) as words.
func expected(set string) string {
	set = strings.TrimSuffix(strings.TrimPrefix(set, "{"), "}")
	var items []string
	for _, s := range strings.Split(set, ", ") {
		items = append(items, strings.Trim(s, "'"))
	}
	if len(items) == 1 {
		if items[0] == "<EOF>" {
			return "the end"
		}
		return fmt.Sprintf("%q", items[0])
	}
	return "one of " + strings.Join(items, " ")
}

// topLevel splits CEL's list of argument types at the commas outside
// parentheses: "list(string), map(string, dyn)" is two types.
func topLevel(list string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range list {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(list[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(list[start:]))
}

func article(typ string) string {
	if strings.ContainsRune("aeiou", rune(typ[0])) {
		return "an " + typ
	}
	return "a " + typ
}
