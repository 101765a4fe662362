package ciba

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/countersign/countersign/authzdetails"
	"github.com/gowebpki/jcs"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The types, their schemas and their rendering are authzdetails'; ciba
// adds what a CIBA request must also satisfy (one reading of the JSON,
// bounds on its size, no invisible characters) and words each refusal
// for the client.

// Limits on authorization_details as a whole.
const (
	maxDetailsBytes = 32 << 10
	maxDetails      = 8
	maxDepth        = 16
	// mcp_tool_call arguments: CIBA's published figures (docs/ciba.md),
	// narrower than the display limits (authzdetails.MaxShown*), which
	// approval applies to this request as well; see authzdetails/limits.go
	// for why there are two.
	maxArgLeaves = 60
	maxArgDepth  = 8
	maxArgString = 200
	maxArgKey    = 64
)

// parseDetails checks an authorization_details parameter and returns it in
// RFC 8785 form, the one form the page, the digest and the token all use,
// with its decoded value for policy. Every refusal says which detail and
// field, and why.
func parseDetails(raw string) (json.RawMessage, []any, error) {
	if len(raw) > maxDetailsBytes {
		return nil, nil, fmt.Errorf("longer than %d bytes", maxDetailsBytes)
	}
	if !utf8.ValidString(raw) {
		return nil, nil, errors.New("not valid UTF-8")
	}
	if err := strictJSON([]byte(raw)); err != nil {
		return nil, nil, err
	}
	canon, err := jcs.Transform([]byte(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("not canonicalizable JSON: %v", err)
	}
	// Validate the canonical form: what is checked is what is shown and
	// signed (RFC 8785 rewrites numbers, e.g. 1e2 as 100).
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(canon))
	if err != nil {
		return nil, nil, err
	}
	list, ok := doc.([]any)
	if !ok {
		return nil, nil, errors.New("expected a JSON array of objects")
	}
	if len(list) == 0 || len(list) > maxDetails {
		return nil, nil, fmt.Errorf("expected 1 to %d objects, got %d", maxDetails, len(list))
	}
	for i, d := range list {
		obj, ok := d.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("[%d]: expected an object", i)
		}
		typ, _ := obj["type"].(string)
		if err := authzdetails.Validate(typ, d); errors.Is(err, authzdetails.ErrUnknownType) {
			return nil, nil, fmt.Errorf("[%d]: unknown type %s (known: %s)", i, quote(typ), strings.Join(authzdetails.Types(), ", "))
		} else if err != nil {
			return nil, nil, fmt.Errorf("[%d] (%s): %s", i, typ, schemaError(err))
		}
		if err := printable(d, fmt.Sprintf("[%d]", i)); err != nil {
			return nil, nil, err
		}
		if typ == authzdetails.TypeMCPToolCall {
			if err := argsShown(obj["arguments"]); err != nil {
				return nil, nil, fmt.Errorf("[%d] (mcp_tool_call): arguments: %v", i, err)
			}
		}
	}
	// Decoded again with float64 numbers, as policy rules see JSON.
	var value []any
	if err := json.Unmarshal(canon, &value); err != nil {
		return nil, nil, err
	}
	return canon, value, nil
}

// strictJSON refuses JSON that two readers could read differently (a
// member named twice) or that nests without bound.
func strictJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(at string, depth int) error
	walk = func(at string, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("%s: nested deeper than %d", orRoot(at), maxDepth)
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("not valid JSON: %v", err)
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch d {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return fmt.Errorf("not valid JSON: %v", err)
				}
				key, _ := k.(string)
				if seen[key] {
					return fmt.Errorf("%s: member %s appears twice", orRoot(at), quote(key))
				}
				seen[key] = true
				if err := walk(at+"."+key, depth+1); err != nil {
					return err
				}
			}
		case '[':
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
					return err
				}
			}
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("not valid JSON: %v", err)
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("not valid JSON: data after the array")
	}
	return nil
}

func orRoot(at string) string {
	if at == "" {
		return "authorization_details"
	}
	return at
}

// printable refuses strings, keys included, with characters the page would
// have to replace or escape (controls, bidi and other format characters,
// line separators): what the approver reads must be what is signed.
func printable(v any, at string) error {
	check := func(s, where string) error {
		for _, r := range s {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' || r == utf8.RuneError {
				return fmt.Errorf("%s: contains the invisible or control character %U", where, r)
			}
		}
		return nil
	}
	switch x := v.(type) {
	case string:
		return check(x, at)
	case map[string]any:
		for k, e := range x {
			if err := check(k, at+" key "+quote(k)); err != nil {
				return err
			}
			if err := printable(e, at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := printable(e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// argsShown keeps mcp_tool_call arguments within what the page lists
// without eliding anything: few enough values, shallow enough, short enough.
func argsShown(args any) error {
	leaves := 0
	var walk func(v any, depth int) error
	walk = func(v any, depth int) error {
		if depth > maxArgDepth {
			return fmt.Errorf("nested deeper than %d", maxArgDepth)
		}
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 0 {
				leaves++
			}
			for k, e := range x {
				if utf8.RuneCountInString(k) > maxArgKey {
					return fmt.Errorf("key %s is longer than %d characters", quote(k), maxArgKey)
				}
				if err := walk(e, depth+1); err != nil {
					return err
				}
			}
		case []any:
			if len(x) == 0 {
				leaves++
			}
			for _, e := range x {
				if err := walk(e, depth+1); err != nil {
					return err
				}
			}
		case string:
			leaves++
			if utf8.RuneCountInString(x) > maxArgString {
				return fmt.Errorf("a string is longer than %d characters", maxArgString)
			}
		default:
			leaves++
		}
		if leaves > maxArgLeaves {
			return fmt.Errorf("more than %d values", maxArgLeaves)
		}
		return nil
	}
	if args == nil {
		return nil
	}
	return walk(args, 0)
}

func schemaError(err error) string {
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return err.Error()
	}
	var out []string
	var leaves func(e *jsonschema.ValidationError)
	leaves = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, fmt.Sprintf("/%s: %v", strings.Join(e.InstanceLocation, "/"), e.ErrorKind))
			return
		}
		for _, c := range e.Causes {
			leaves(c)
		}
	}
	leaves(verr)
	return strings.Join(out, "; ")
}

// quote shows client text in a message, bounded and escaped.
func quote(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		s = string([]rune(s)[:64]) + "…"
	}
	return fmt.Sprintf("%q", s)
}
