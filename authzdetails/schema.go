package authzdetails

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The authorization_details types Countersign accepts from a client, each
// with the JSON Schema in schemas/ that an object of that type must
// satisfy. Render shows each type field by field; the schemas admit
// exactly the fields it shows, no longer than it shows them in full, so
// nothing a client sends is approved unseen (RFC 9396 section 5: unknown
// types and unknown fields are refused). A change to one belongs with a
// change to the other, here.
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// ErrUnknownType is returned by Validate for a type without a schema.
var ErrUnknownType = errors.New("unknown authorization_details type")

// compiled returns the compiled schemas by type, compiling them on first
// use: once, so the request path only looks them up.
var compiled = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	return compileSchemas(schemaFiles)
})

// CheckSchemas reports whether the embedded schemas compile; a server
// that validates details calls it at start, so it never starts with a
// schema that does not.
func CheckSchemas() error {
	_, err := compiled()
	return err
}

// compileSchemas compiles schemas/*.json of fsys, keyed by file name
// without .json.
func compileSchemas(fsys fs.FS) (map[string]*jsonschema.Schema, error) {
	files, err := fs.Glob(fsys, "schemas/*.json")
	if err != nil {
		return nil, fmt.Errorf("authzdetails: detail schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	for _, f := range files {
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("authzdetails: %s: %w", f, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("authzdetails: %s: %w", f, err)
		}
		if err := c.AddResource("mem:///countersign/"+f, doc); err != nil {
			return nil, fmt.Errorf("authzdetails: %s: %w", f, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, f := range files {
		s, err := c.Compile("mem:///countersign/" + f)
		if err != nil {
			return nil, fmt.Errorf("authzdetails: %s: %w", f, err)
		}
		out[strings.TrimSuffix(path.Base(f), ".json")] = s
	}
	return out, nil
}

// Types are the authorization_details types that have a schema, sorted
// (discovery's authorization_details_types_supported); none if the
// schemas do not compile.
func Types() []string {
	schemas, _ := compiled()
	out := make([]string, 0, len(schemas))
	for t := range schemas {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Schema returns the JSON Schema of one type.
func Schema(typ string) ([]byte, bool) {
	b, err := schemaFiles.ReadFile("schemas/" + typ + ".json")
	if err != nil {
		return nil, false
	}
	schemas, err := compiled()
	return b, err == nil && schemas[typ] != nil
}

// Validate checks one detail, decoded as jsonschema.UnmarshalJSON decodes
// it, against the schema of typ: ErrUnknownType when typ has none, else
// the validator's error (a *jsonschema.ValidationError), which the caller
// words for its client.
func Validate(typ string, v any) error {
	schemas, err := compiled()
	if err != nil {
		return err
	}
	s := schemas[typ]
	if s == nil {
		return ErrUnknownType
	}
	return s.Validate(v)
}
