package main

import (
	"strings"
	"testing"
)

// agents add edits the text of the file, so everything else in it stays as
// the person wrote it; shapes it does not know are left for them to edit.
func TestInsertAgentKeepsTheFile(t *testing.T) {
	const item = "{id: bot, token_sha256: ab}"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no http section", "tools: {}\n", "tools: {}\nhttp:\n  agents:\n    - " + item + "\n"},
		{"no trailing newline", "tools: {}", "tools: {}\nhttp:\n  agents:\n    - " + item + "\n"},
		{"http without agents", "http:\n  addr: \"\"  # set by --http\ntools: {}\n",
			"http:\n  agents:\n    - " + item + "\n  addr: \"\"  # set by --http\ntools: {}\n"},
		{"empty flow list with a comment", "http:\n  agents: []   # none yet\n",
			"http:\n  agents:    # none yet\n    - " + item + "\n"},
		{"empty value", "http:\n  agents:\n# next\ntools: {}\n",
			"http:\n  agents:\n    - " + item + "\n# next\ntools: {}\n"},
		{"block list of mappings", "http:\n  agents:\n  - id: a\n    token_sha256: cd\n  # keep\nx: 1\n",
			"http:\n  agents:\n  - id: a\n    token_sha256: cd\n  - " + item + "\n  # keep\nx: 1\n"},
		{"block list of flow items", "http:\n    agents:\n        - {id: a, token_sha256: cd}\n",
			"http:\n    agents:\n        - {id: a, token_sha256: cd}\n        - " + item + "\n"},
		{"non-empty flow list", "http:\n  agents: [{id: a, token_sha256: cd}]\n", ""},
		{"http in flow style", "http: {agents: []}\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := insertAgent([]byte(tc.in), item)
			if tc.want == "" {
				if ok {
					t.Errorf("edited a shape it should leave alone:\n%s", got)
				}
				return
			}
			if !ok || string(got) != tc.want {
				t.Errorf("got (%v)\n%s\nwant\n%s", ok, got, tc.want)
			}
			if !strings.Contains(string(got), item) {
				t.Error("item missing")
			}
		})
	}
}
