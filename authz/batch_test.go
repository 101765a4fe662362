package authz

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// batchTool is a batchable tool that rules raise to high and to critical.
func batchTool() config.Tool {
	return config.Tool{
		Level: "low", Approvers: []string{"alice"}, Batchable: true,
		Rules: []config.Rule{
			{Name: "large", When: "args.amount > 10", Level: "high"},
			{Name: "huge", When: "args.amount > 100", Level: "critical", Approvers: []string{"alice", "bob"}},
		},
	}
}

// Only a high call of a batchable tool may be batched: a call its rules
// raise to critical keeps its own taps.
func TestBatchableOnlyAtHigh(t *testing.T) {
	p := compileOne(t, batchTool())
	for _, tc := range []struct {
		amount    float64
		level     vocab.Level
		batchable bool
	}{{5, "low", false}, {50, "high", true}, {500, "critical", false}} {
		d := p.Decide(Input{Tool: "x", Args: map[string]any{"amount": tc.amount}})
		if d.Level != tc.level || d.Batchable != tc.batchable {
			t.Errorf("amount %v: level %s batchable %v, want %s %v", tc.amount, d.Level, d.Batchable, tc.level, tc.batchable)
		}
	}
	plain := batchTool()
	plain.Batchable = false
	if d := compileOne(t, plain).Decide(Input{Tool: "x", Args: map[string]any{"amount": 50.0}}); d.Level != "high" || d.Batchable {
		t.Errorf("a tool that does not say batchable: %+v", d)
	}
}

func TestCriticalToolCannotBeBatchable(t *testing.T) {
	_, err := Compile(map[string]config.Tool{"x": {Level: "critical", Approvers: []string{"alice", "bob"}, Batchable: true}}, testApprovers, Options{})
	var ce *CompileError
	if !errors.As(err, &ce) || ce.Path != "tools.x.batchable" {
		t.Fatalf("got %v, want a compile error at tools.x.batchable", err)
	}
}

// The logged policy says which tools are batchable, and replay holds a
// request's recorded batchability to it. A policy without batches has
// the document it had before batches existed.
func TestBatchableInDocumentAndReplay(t *testing.T) {
	doc := NewDocument(map[string]config.Tool{"x": batchTool()}, testApprovers, Options{})
	raw, _ := json.Marshal(doc)
	if !strings.Contains(string(raw), `"batchable":true`) {
		t.Fatalf("document lacks batchable: %s", raw)
	}
	var back Document
	json.Unmarshal(raw, &back)
	rp, err := back.Compile()
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Tool: "x", Args: map[string]any{"amount": 50.0}}
	d := rp.Decide(in)
	if !d.Batchable {
		t.Fatalf("the document's policy does not batch: %+v", d)
	}
	if err := rp.Replay(recorded(in, d)); err != nil {
		t.Fatalf("genuine decision: %v", err)
	}
	forged := recorded(in, d)
	forged.Requirement.Batchable = false
	if err := rp.Replay(forged); err == nil || !strings.Contains(err.Error(), "batchable false, the policy gives true") {
		t.Fatalf("request recorded not batchable: %v", err)
	}
	plain := batchTool()
	plain.Batchable = false
	forged = recorded(in, compileOne(t, plain).Decide(in))
	forged.Requirement.Batchable = true
	if err := compileOne(t, plain).Replay(forged); err == nil || !strings.Contains(err.Error(), "batchable true, the policy gives false") {
		t.Fatalf("request recorded batchable against the policy: %v", err)
	}
	raw, _ = json.Marshal(NewDocument(map[string]config.Tool{"x": plain}, testApprovers, Options{}))
	if strings.Contains(string(raw), "batchable") {
		t.Fatalf("a policy without batches names them: %s", raw)
	}
}
