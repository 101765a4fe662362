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

// agents remove and rotate edit only the agent's own lines, in the shapes
// agents add writes and people write by hand; others are left for a person.
func TestRemoveAndRotateAgentKeepTheFile(t *testing.T) {
	const (
		old = "1111111111111111111111111111111111111111111111111111111111111111"
		new = "2222222222222222222222222222222222222222222222222222222222222222"
	)
	for _, tc := range []struct {
		name, in, removed, rotated string
	}{
		{"flow items", "http:\n  agents:\n    - {id: a, token_sha256: " + old + "}  # CI\n    - {id: b, token_sha256: cd}\n# end\n",
			"http:\n  agents:\n    - {id: b, token_sha256: cd}\n# end\n",
			"http:\n  agents:\n    - {id: a, token_sha256: " + new + "}  # CI\n    - {id: b, token_sha256: cd}\n# end\n"},
		{"block mappings, quoted", "http:\n  agents:\n  - id: b\n    token_sha256: cd\n  - id: a\n    token_sha256: \"" + old + "\"\n  # keep\nx: 1\n",
			"http:\n  agents:\n  - id: b\n    token_sha256: cd\n  # keep\nx: 1\n",
			"http:\n  agents:\n  - id: b\n    token_sha256: cd\n  - id: a\n    token_sha256: \"" + new + "\"\n  # keep\nx: 1\n"},
		{"flow list", "http:\n  agents: [{id: a, token_sha256: " + old + "}, {id: b, token_sha256: cd}]\n", "", ""},
		{"no such agent", "http:\n  agents:\n    - {id: b, token_sha256: cd}\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := removeAgentItem([]byte(tc.in), "a")
			if ok != (tc.removed != "") || ok && string(got) != tc.removed {
				t.Errorf("remove: got (%v)\n%s\nwant\n%s", ok, got, tc.removed)
			}
			got, ok = replaceAgentHash([]byte(tc.in), "a", new)
			if ok != (tc.rotated != "") || ok && string(got) != tc.rotated {
				t.Errorf("rotate: got (%v)\n%s\nwant\n%s", ok, got, tc.rotated)
			}
		})
	}
}
