package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/countersign/countersign/config"
	"go.yaml.in/yaml/v3"
)

// editAgents changes http.agents of the YAML file at path with edit. It
// edits the text rather than re-encoding the document, so that every
// comment and blank line stays where the person put it; edit knows the
// usual shapes and returns false for any other, and so does editAgents
// (stored false), which the caller then asks the person to edit. The
// result must validate, and done must find the change in its agents,
// before it replaces the file atomically (same mode).
func editAgents(path string, edit func([]byte) ([]byte, bool), done func([]config.Agent) bool) (stored bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	edited, ok := edit(data)
	if !ok {
		return false, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".mcp-*.yaml")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(edited); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	c, err := config.Load(tmp.Name())
	if err != nil {
		return false, errors.Join(errors.New("the edited configuration would not validate; left unchanged"), err)
	}
	if !done(c.HTTP.Agents) {
		return false, nil
	}
	return true, os.Rename(tmp.Name(), path)
}

// agentItem finds the item of http.agents whose id is id, in a block list
// (the shapes agents add writes): the sequence, the item's index and the
// lines of data. ok is false for any other shape.
func agentItem(data []byte, id string) (seq *yaml.Node, i int, lines []string, ok bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, 0, nil, false
	}
	_, httpVal := lookupKey(doc.Content[0], "http")
	if httpVal == nil || httpVal.Kind != yaml.MappingNode || httpVal.Style&yaml.FlowStyle != 0 {
		return nil, 0, nil, false
	}
	_, seq = lookupKey(httpVal, "agents")
	if seq == nil || seq.Kind != yaml.SequenceNode || seq.Style&yaml.FlowStyle != 0 {
		return nil, 0, nil, false
	}
	for i, item := range seq.Content {
		if _, v := lookupKey(item, "id"); item.Kind == yaml.MappingNode && v != nil && v.Value == id {
			return seq, i, strings.SplitAfter(string(data), "\n"), true
		}
	}
	return nil, 0, nil, false
}

// removeAgentItem returns data without the http.agents item of id: the
// lines from its dash to its last value, when nothing else shares them.
func removeAgentItem(data []byte, id string) ([]byte, bool) {
	seq, i, lines, ok := agentItem(data, id)
	if !ok {
		return nil, false
	}
	item := seq.Content[i]
	first, last := item.Line, lastLine(item)
	// The item's first line holds only its dash before it, and the next
	// item starts on a later line than this one ends.
	if before := lines[first-1][:item.Column-1]; strings.TrimSpace(before) != "-" {
		return nil, false
	}
	if i+1 < len(seq.Content) && seq.Content[i+1].Line <= last {
		return nil, false
	}
	if i > 0 && lastLine(seq.Content[i-1]) >= first {
		return nil, false
	}
	out := append(lines[:first-1:first-1], lines[last:]...)
	return []byte(strings.Join(out, "")), true
}

// replaceAgentHash returns data with the token_sha256 of id's http.agents
// item replaced by hash, in place, whatever the item's style.
func replaceAgentHash(data []byte, id, hash string) ([]byte, bool) {
	seq, i, lines, ok := agentItem(data, id)
	if !ok {
		return nil, false
	}
	_, v := lookupKey(seq.Content[i], "token_sha256")
	if v == nil || v.Kind != yaml.ScalarNode {
		return nil, false
	}
	line := lines[v.Line-1]
	at := v.Column - 1
	if v.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		at++ // past the opening quote
	}
	if at > len(line) || !strings.HasPrefix(line[at:], v.Value) {
		return nil, false
	}
	lines[v.Line-1] = line[:at] + hash + line[at+len(v.Value):]
	return []byte(strings.Join(lines, "")), true
}
