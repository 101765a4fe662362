package tools

import (
	"context"
	"testing"

	"github.com/countersign/countersign/config"
)

// Every built-in tool with facts has them read by ReadFacts too: a tool
// it did not know would have no facts in policy test, and its rules would
// be judged without them.
func TestReadFactsKnowsEveryToolWithFacts(t *testing.T) {
	for tool := range Facts() {
		facts, err := ReadFacts(context.Background(), &config.Config{}, nil, tool, map[string]any{})
		if facts == nil && err == nil {
			t.Errorf("ReadFacts does not know %s, whose Prepare supplies %v", tool, Facts()[tool])
		}
	}
}
