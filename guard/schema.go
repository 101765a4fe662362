package guard

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schema validates a tool's arguments against its input schema. We validate
// inside the guard rather than with mcp-go's WithInputSchemaValidation so
// that a rejected call is audited like every other decision.
type schema struct{ compiled *jsonschema.Schema }

func compileSchema(tool string, raw []byte) (*schema, error) {
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
	return &schema{compiled}, nil
}

// validate returns nil or an error naming each offending field, e.g.
// "invalid arguments: /amount: must be > 0". args is the decoded JSON
// object.
func (s *schema) validate(args map[string]any) error {
	err := s.compiled.Validate(args)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("invalid arguments: %w", err)
	}
	return errors.New("invalid arguments: " + strings.Join(leaves(verr), "; "))
}

func leaves(e *jsonschema.ValidationError) []string {
	if len(e.Causes) == 0 {
		field := "/" + strings.Join(e.InstanceLocation, "/")
		if field == "/" {
			field = "arguments"
		}
		return []string{fmt.Sprintf("%s: %v", field, e.ErrorKind)}
	}
	var out []string
	for _, c := range e.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}
