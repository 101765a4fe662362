package authz

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign/vocab"
)

// replayPolicy is the shipped policy as the audit log would record it,
// through JSON and back.
func replayPolicy(t *testing.T) (*Policy, *Policy) {
	t.Helper()
	p, c := shippedPolicy(t)
	doc := NewDocument(c.Tools, c.Approvers, Options{DefaultTimeout: c.Approval.Timeout, Facts: shippedFacts})
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var back Document
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	rp, err := back.Compile()
	if err != nil {
		t.Fatalf("compile the document: %v\n%s", err, raw)
	}
	return p, rp
}

func shippedCases(t *testing.T) []Case {
	t.Helper()
	cases, err := LoadCases("testdata/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func recorded(in Input, d Decision) Recorded {
	r := Recorded{Tool: in.Tool, Agent: in.Agent, Args: in.Args, Level: d.Level, Rules: d.Rules}
	if d.Level == "high" || d.Level == "critical" {
		r.Requirement = &Requirement{Approvers: d.Approvers, Quorum: d.Quorum, UserVerification: d.UserVerification, Batchable: d.Batchable}
	}
	return r
}

// A document decides as the policy it was made from, and every genuine
// decision replays against it without the facts: replay raises no false
// alarm on the shipped cases.
func TestDocumentRoundTripAndGenuineDecisionsReplay(t *testing.T) {
	p, rp := replayPolicy(t)
	for _, c := range shippedCases(t) {
		in := Input{Tool: c.Tool, Agent: c.Agent, Args: c.Args, Facts: c.Facts, Now: c.Now}
		d, rd := p.Decide(in), rp.Decide(in)
		if d.Level != rd.Level || !slices.Equal(d.Rules, rd.Rules) || !slices.Equal(d.Approvers, rd.Approvers) || d.Quorum != rd.Quorum || d.UserVerification != rd.UserVerification {
			t.Errorf("%s: the document decides %+v, the policy %+v", c.Name, rd, d)
		}
		if d.Level == "deny" {
			continue // the log replays what ran or was approved
		}
		if err := rp.Replay(recorded(in, d)); err != nil {
			t.Errorf("%s: genuine decision %s %v refused: %v", c.Name, d.Level, d.Rules, err)
		}
		redacted := recorded(in, d)
		redacted.Args = nil
		if err := rp.Replay(redacted); err != nil {
			t.Errorf("%s: genuine decision with redacted args refused: %v", c.Name, err)
		}
	}
}

// What a server-key holder might write instead of the policy's decision.
func TestReplayRefusesDecisionsThePolicyDoesNotGive(t *testing.T) {
	_, rp := replayPolicy(t)
	big := map[string]any{"to": "Vendor X", "amount": 500000.0, "currency": "USD"}
	mid := map[string]any{"to": "Vendor X", "amount": 20000.0, "currency": "USD"}
	treasury := []string{"alice", "bob"}
	critical := &Requirement{Approvers: treasury, Quorum: 2, UserVerification: vocab.UVRequired}
	cases := []struct {
		name string
		r    Recorded
		msg  string
	}{
		{"a 500,000 transfer relabelled low", Recorded{Tool: "transfer", Args: big, Level: "low"},
			"rule very-large holds on the logged arguments and raises the call to critical; the log says low"},
		{"a 20,000 transfer relabelled low", Recorded{Tool: "transfer", Args: mid, Level: "low", Usage: NoUsage(nil)},
			"rule large-or-new-payee holds on the logged arguments and raises the call to high; the log says low"},
		{"a 500,000 transfer at high", Recorded{Tool: "transfer", Args: big, Level: "high", Rules: []string{"large-or-new-payee"},
			Requirement: &Requirement{Approvers: treasury, Quorum: 1, UserVerification: vocab.UVPreferred}},
			"rule very-large holds on the logged arguments and raises the call to critical; the log says high"},
		{"critical with a quorum of one", Recorded{Tool: "transfer", Args: big, Level: "critical", Rules: []string{"very-large"},
			Requirement: &Requirement{Approvers: treasury, Quorum: 1, UserVerification: vocab.UVRequired}}, "quorum 1, the policy gives 2"},
		{"critical without UV", Recorded{Tool: "transfer", Args: big, Level: "critical", Rules: []string{"very-large"},
			Requirement: &Requirement{Approvers: treasury, Quorum: 2, UserVerification: vocab.UVPreferred}}, `user verification "preferred", the policy gives "required"`},
		{"an approver from outside treasury", Recorded{Tool: "transfer", Args: big, Level: "critical", Rules: []string{"very-large"},
			Requirement: &Requirement{Approvers: []string{"alice", "mallory"}, Quorum: 2, UserVerification: vocab.UVRequired}}, "eligible approvers [alice, mallory], the policy gives [alice, bob]"},
		{"a rule the policy does not have", Recorded{Tool: "transfer", Args: big, Level: "critical", Rules: []string{"ceo-said-so"}, Requirement: critical},
			`names rule "ceo-said-so"`},
		{"a rule that is false on the arguments", Recorded{Tool: "transfer", Args: mid, Level: "critical", Rules: []string{"very-large"}, Requirement: critical, Usage: NoUsage(nil)},
			"the log names rule very-large, which is false on the logged arguments"},
		{"a raised level without a rule", Recorded{Tool: "deploy", Args: map[string]any{"service": "api", "version": "1", "environment": "staging"}, Level: "high"},
			"names no rule that raised it"},
		{"an unknown tool", Recorded{Tool: "format_disk", Level: "low"}, "not a tool of this policy"},
		{"arguments the policy cannot evaluate", Recorded{Tool: "transfer", Args: map[string]any{"to": "X"}, Level: "low", Usage: NoUsage(nil)},
			"the policy would have denied the call"},
	}
	// A rule that sums usage cannot be settled when the log did not keep
	// the usage the decision saw.
	if err := rp.Replay(Recorded{Tool: "transfer", Args: mid, Level: "low"}); err != nil {
		t.Errorf("a decision on usage the log did not keep was judged: %v", err)
	}
	for _, tc := range cases {
		err := rp.Replay(tc.r)
		var re *ReplayError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}
