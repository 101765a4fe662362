package authz

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
)

// An upstream whose unlisted tools default to critical needs as many
// approvers as the default quorum; with fewer, no call of them could ever
// be approved, so the policy is refused, naming the numbers and who.
func TestUpstreamDefaultQuorumThatCannotBeMet(t *testing.T) {
	ups := []config.Upstream{{Name: "files", Prefix: "files__", DefaultLevel: "critical", Approvers: []string{"bob"}}}
	_, err := Compile(map[string]config.Tool{}, testApprovers, Options{Upstreams: ups})
	want := "upstreams[0].default_level: critical needs a quorum of 2 distinct approvers, but upstreams[0].approvers allows 1 (bob): list more approvers, or list the tools under tools: with their own quorum"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	ups[0].Approvers = []string{"role:treasury"} // alice and bob
	if _, err := Compile(map[string]config.Tool{}, testApprovers, Options{Upstreams: ups}); err != nil {
		t.Fatalf("two approvers for a quorum of 2: %v", err)
	}
}

// A quorum of the tool that every critical rule overrides is never used:
// it compiles, with a warning that names the tool, its quorum and each
// rule's own. While one critical rule takes the tool's quorum, nothing is
// said.
func TestToolQuorumNeverUsedIsWarned(t *testing.T) {
	compile := func(ct config.Tool) string {
		t.Helper()
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if _, err := Compile(map[string]config.Tool{"transfer": ct}, testApprovers, Options{Logger: log}); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	rules := []config.Rule{
		{When: "args.amount > 10", Level: "high"},
		{When: "args.amount > 100", Level: "critical", Quorum: 2},
		{When: "args.amount > 1000", Level: "critical", Quorum: 3, Approvers: []string{"role:ops", "bob"}},
	}
	got := compile(config.Tool{Level: "low", Approvers: []string{"role:treasury", "carol"}, Quorum: 2, Rules: rules})
	want := `msg="authz: tools.transfer.quorum 2 is never used: transfer is not critical itself and every critical rule sets its own quorum (rules[1] sets 2, rules[2] sets 3)" path=tools.transfer.quorum`
	if !strings.Contains(got, want) {
		t.Errorf("log\n%s\nlacks\n%s", got, want)
	}

	rules[1].Quorum = 0 // now takes the tool's
	if got := compile(config.Tool{Level: "low", Approvers: []string{"role:treasury", "carol"}, Quorum: 2, Rules: rules}); strings.Contains(got, "never used") {
		t.Errorf("warned of a quorum rules[1] uses:\n%s", got)
	}
}

// Quorums lists every pairing of a quorum with the approvers who may meet
// it, as a call can meet it at run time: what serve holds to the keys
// really enrolled.
func TestQuorumsListsEveryPairing(t *testing.T) {
	tools := map[string]config.Tool{
		"transfer": {Level: "low", Approvers: []string{"role:treasury"}, Rules: []config.Rule{
			{When: "args.amount > 10", Level: "high"},
			{When: "args.amount > 100", Level: "critical", Quorum: 2},
			{When: "args.amount > 1000", Level: "critical", Approvers: []string{"role:ops"}},
		}},
		"deploy":      {Level: "high", Approvers: []string{"carol"}},
		"read_secret": {Level: "low"},
	}
	ups := []config.Upstream{{Name: "files", Prefix: "files__", Approvers: []string{"alice"}}}
	p, err := Compile(tools, testApprovers, Options{Upstreams: ups})
	if err != nil {
		t.Fatal(err)
	}
	treasury, ops := []string{"alice", "bob"}, []string{"alice", "carol"}
	want := []Quorum{
		{Tool: "deploy", Path: "tools.deploy.level", N: 1, From: "tools.deploy.approvers", Approvers: []string{"carol"}},
		{Tool: "transfer", Path: "tools.transfer.rules[0].level", N: 1, From: "tools.transfer.approvers", Approvers: treasury},
		{Tool: "transfer", Path: "tools.transfer.rules[1].quorum", N: 2, From: "tools.transfer.rules[2].approvers", Approvers: ops},
		{Tool: "transfer", Path: "tools.transfer.rules[1].quorum", N: 2, From: "tools.transfer.approvers", Approvers: treasury},
		{Tool: "transfer", Path: "tools.transfer.quorum", N: 2, From: "tools.transfer.rules[2].approvers", Approvers: ops},
		{Tool: "transfer", Path: "tools.transfer.quorum", N: 2, From: "tools.transfer.approvers", Approvers: treasury},
		{Tool: "upstream files (tools not listed under tools:)", Path: "upstreams[0].default_level", N: 1, From: "upstreams[0].approvers", Approvers: []string{"alice"}},
	}
	if got := p.Quorums(); !reflect.DeepEqual(got, want) {
		t.Errorf("Quorums\n%+v\nwant\n%+v", got, want)
	}
	if !want[0].Countable() || (Quorum{Approvers: []string{"alice", "role:finance"}}).Countable() {
		t.Error("Countable: ids are countable, a role of the identity provider is not")
	}
}
