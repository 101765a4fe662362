// Package argschema checks a tool call's arguments against the tool's input
// schema (JSON Schema) and says what is wrong in sentences an agent or a
// person can act on: the field, and what it must be. [Measure] bounds
// their size and nesting first, cheaply.
//
// The guard validates itself rather than through mcp-go's
// WithInputSchemaValidation, so that a rejected call is audited like every
// other decision.
package argschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Schema is one tool's compiled input schema.
type Schema struct{ compiled *jsonschema.Schema }

// Compile compiles tool's input schema raw.
func Compile(tool string, raw []byte) (*Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("tool %s: input schema: %w", tool, err)
	}
	url := "mem:///countersign/tools/" + tool + ".json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("tool %s: input schema: %w", tool, err)
	}
	compiled, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("tool %s: input schema: %w", tool, err)
	}
	return &Schema{compiled}, nil
}

// Validate returns nil or an error naming each offending field in words an
// agent (and the auditor reading the reason) understands, e.g.
// "invalid arguments: amount: must be greater than 0; unknown argument "evil"".
// args is the decoded JSON object.
func (s *Schema) Validate(args map[string]any) error {
	err := s.compiled.Validate(args)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("invalid arguments: %w", err)
	}
	msgs := problems(verr)
	slices.Sort(msgs)
	return errors.New("invalid arguments: " + strings.Join(slices.Compact(msgs), "; "))
}

// problems renders the leaves of a validation error, one sentence each.
// Containers (a group of keywords, a $ref, allOf) only carry their causes;
// anyOf and oneOf are said as a whole, since listing why every alternative
// failed would read as a list of contradictory demands.
func problems(e *jsonschema.ValidationError) []string {
	switch k := e.ErrorKind.(type) {
	case *kind.AnyOf:
		return []string{at(e.InstanceLocation, "does not match any of the allowed forms")}
	case *kind.OneOf:
		if len(k.Subschemas) == 0 {
			return []string{at(e.InstanceLocation, "does not match any of the allowed forms")}
		}
		return []string{at(e.InstanceLocation, "matches more than one of the allowed forms")}
	}
	if len(e.Causes) > 0 {
		var out []string
		for _, c := range e.Causes {
			out = append(out, problems(c)...)
		}
		return out
	}
	return sentences(e.InstanceLocation, e.ErrorKind)
}

// sentences says what one failed keyword means for the value at loc. Values
// the agent sent are not repeated (they are in the call, and an audit reason
// should be the server's words); names of unknown arguments are, bounded,
// because they are what the agent must fix.
func sentences(loc []string, k jsonschema.ErrorKind) []string {
	switch k := k.(type) {
	case *kind.Type:
		return []string{at(loc, "must be "+typeNames(k.Want)+", not "+typeName(k.Got))}
	case *kind.Enum:
		return []string{at(loc, "must be "+oneOf(k.Want))}
	case *kind.Const:
		return []string{at(loc, "must be "+literal(k.Want))}
	case *kind.Format:
		return []string{at(loc, "must be a valid "+k.Want)}
	case *kind.Required:
		var out []string
		for _, m := range k.Missing {
			out = append(out, at(loc, "missing required "+member(loc)+" "+name(m)))
		}
		return out
	case *kind.Dependency:
		return dependent(loc, k.Prop, k.Missing)
	case *kind.DependentRequired:
		return dependent(loc, k.Prop, k.Missing)
	case *kind.AdditionalProperties:
		var out []string
		for _, p := range k.Properties {
			out = append(out, at(loc, "unknown "+member(loc)+" "+name(p)))
		}
		return out
	case *kind.PropertyNames:
		return []string{at(loc, "invalid "+member(loc)+" name "+name(k.Property))}
	case *kind.MinProperties:
		return []string{at(loc, "needs at least "+count(k.Want, member(loc)))}
	case *kind.MaxProperties:
		return []string{at(loc, "takes at most "+count(k.Want, member(loc)))}
	case *kind.MinLength:
		if k.Want == 1 {
			return []string{at(loc, "must not be empty")}
		}
		return []string{at(loc, "at least "+count(k.Want, "character"))}
	case *kind.MaxLength:
		return []string{at(loc, "at most "+count(k.Want, "character"))}
	case *kind.Pattern:
		return []string{at(loc, "must match the pattern "+k.Want)}
	case *kind.Minimum:
		return []string{at(loc, "must be at least "+number(k.Want))}
	case *kind.Maximum:
		return []string{at(loc, "must be at most "+number(k.Want))}
	case *kind.ExclusiveMinimum:
		return []string{at(loc, "must be greater than "+number(k.Want))}
	case *kind.ExclusiveMaximum:
		return []string{at(loc, "must be less than "+number(k.Want))}
	case *kind.MultipleOf:
		return []string{at(loc, "must be a multiple of "+number(k.Want))}
	case *kind.MinItems:
		return []string{at(loc, "needs at least "+count(k.Want, "item"))}
	case *kind.MaxItems:
		return []string{at(loc, "takes at most "+count(k.Want, "item"))}
	case *kind.AdditionalItems:
		return []string{at(loc, "has "+count(k.Count, "item")+" more than allowed")}
	case *kind.UniqueItems:
		return []string{at(loc, fmt.Sprintf("items %d and %d are the same; each must be different", k.Duplicates[0], k.Duplicates[1]))}
	case *kind.Contains:
		return []string{at(loc, "has no item of the required form")}
	case *kind.MinContains:
		return []string{at(loc, "needs at least "+count(k.Want, "item")+" of the required form")}
	case *kind.MaxContains:
		return []string{at(loc, "takes at most "+count(k.Want, "item")+" of the required form")}
	case *kind.ContentEncoding:
		return []string{at(loc, "must be "+k.Want+" encoded")}
	case *kind.ContentMediaType:
		return []string{at(loc, "must be "+k.Want)}
	case *kind.ContentSchema:
		return []string{at(loc, "content is not of the required form")}
	case *kind.Not, *kind.FalseSchema:
		return []string{at(loc, "is not allowed")}
	case *kind.InvalidJsonValue:
		return []string{at(loc, "is not a JSON value")}
	}
	// Keywords of schema vocabularies we do not know: the library's own words.
	return []string{at(loc, fmt.Sprint(k))}
}

// at prefixes msg with the field it is about; a message about the
// arguments object itself stands alone ("missing required argument "from"").
func at(loc []string, msg string) string {
	if len(loc) == 0 {
		return msg
	}
	var b strings.Builder
	for i, seg := range loc {
		switch {
		case isIndex(seg):
			b.WriteString("[" + seg + "]")
		case i > 0:
			b.WriteString("." + bound(seg))
		default:
			b.WriteString(bound(seg))
		}
	}
	return b.String() + ": " + msg
}

var indexPattern = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

func isIndex(seg string) bool { return indexPattern.MatchString(seg) }

// member is what the keys of the object at loc are called: the tool's
// arguments at the top, fields below.
func member(loc []string) string {
	if len(loc) == 0 {
		return "argument"
	}
	return "field"
}

func dependent(loc []string, prop string, missing []string) []string {
	var out []string
	for _, m := range missing {
		out = append(out, at(loc, "missing required "+member(loc)+" "+name(m)+" (needed with "+name(prop)+")"))
	}
	return out
}

// name quotes an agent-chosen key, bounded so it cannot flood a reason.
func name(s string) string { return strconv.Quote(bound(s)) }

func bound(s string) string {
	const max = 64
	if r := []rune(s); len(r) > max {
		return string(r[:max]) + "…"
	}
	return s
}

func count(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func typeName(t string) string {
	switch t {
	case "integer":
		return "a whole number"
	case "number":
		return "a number"
	case "string":
		return "a string"
	case "boolean":
		return "true or false"
	case "object":
		return "an object"
	case "array":
		return "an array"
	case "null":
		return "null"
	}
	return t
}

func typeNames(ts []string) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = typeName(t)
	}
	return orList(names)
}

func oneOf(vs []any) string {
	if len(vs) == 1 {
		return literal(vs[0])
	}
	lits := make([]string, len(vs))
	for i, v := range vs {
		lits[i] = literal(v)
	}
	return "one of " + strings.Join(lits, ", ")
}

func orList(xs []string) string {
	switch len(xs) {
	case 0:
		return "nothing"
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// literal writes a schema's value as JSON ("production", 5, true), as the
// agent would have to send it.
func literal(v any) string {
	if r, ok := v.(*big.Rat); ok {
		return number(r)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// number writes a schema bound as a decimal: 0, 100, 0.5.
func number(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}
