package authzdetails

import (
	"encoding/json"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// The schemas are embedded, so whether they compile is settled at build
// time: this is the test that settles it.
func TestEmbeddedDetailSchemasCompile(t *testing.T) {
	schemas, err := compileSchemas(schemaFiles)
	if err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(schemaFiles, "schemas/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded schemas %v, %v", files, err)
	}
	var want []string
	for _, f := range files {
		typ := strings.TrimSuffix(path.Base(f), ".json")
		want = append(want, typ)
		if schemas[typ] == nil {
			t.Errorf("%s did not compile to a schema", f)
		}
		if _, ok := Schema(typ); !ok {
			t.Errorf("Schema(%q) not found", typ)
		}
	}
	slices.Sort(want)
	if got := Types(); !slices.Equal(got, want) {
		t.Errorf("Types() = %v, want %v", got, want)
	}
}

func TestDetailSchemaThatDoesNotCompileIsAnError(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":      `{"type": "object",`,
		"not a schema":  `{"type": 5}`,
		"dangling $ref": `{"$ref": "other.json"}`,
	} {
		fsys := fstest.MapFS{
			"schemas/good.json":   {Data: []byte(`{"type": "object"}`)},
			"schemas/broken.json": {Data: []byte(body)},
		}
		schemas, err := compileSchemas(fsys)
		if err == nil || !strings.Contains(err.Error(), "schemas/broken.json") {
			t.Errorf("%s: got %v, %v; want an error naming schemas/broken.json", name, schemas, err)
		}
	}
}

// Every type with a schema has a renderer of its own, and every type with
// a renderer of its own has a schema: a client is never admitted a type
// the page would show only generically, and no named type is unreachable
// from CIBA.
func TestEachSchemaHasItsRenderer(t *testing.T) {
	named := []string{TypeDeployment, TypeMCPToolCall, TypePayment, TypeSecretAccess}
	slices.Sort(named)
	if got := Types(); !slices.Equal(got, named) {
		t.Fatalf("types with a schema %v, types rendered by name %v", got, named)
	}
	for _, typ := range named {
		got := display(t, []json.RawMessage{json.RawMessage(`{"type":"` + typ + `"}`)}, nil, "t", "a", "C")
		if strings.HasPrefix(got, "Action: "+typ+"\n") {
			t.Errorf("%s is rendered generically:\n%s", typ, got)
		}
	}
}
