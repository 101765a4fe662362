package verify

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// An export with agent.frozen and agent.unfrozen verifies; one that does
// not say which agent, or who froze it, does not.
func TestVerifyAcceptsAgentFreezes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frozen audit.Entry
		want   string
	}{
		{"well formed", audit.Entry{Kind: vocab.KindAgentFrozen, Agent: "agent-1", Approver: "cli:alice", DecidedAt: "2026-03-01T09:40:00.000000000Z", Reason: "frozen: incident"}, ""},
		{"every agent", audit.Entry{Kind: vocab.KindAgentFrozen, Agent: "*", Approver: "loopback-page", Reason: "frozen"}, ""},
		{"nobody froze it", audit.Entry{Kind: vocab.KindAgentFrozen, Agent: "agent-1", Reason: "frozen"}, "agent.frozen does not say which agent, or who acted"},
		{"with call fields", audit.Entry{Kind: vocab.KindAgentFrozen, Agent: "agent-1", Approver: "bob", Tool: "transfer"}, "agent.frozen carries call fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key, err := audit.LoadOrCreateKey(dir)
			if err != nil {
				t.Fatal(err)
			}
			l := openLog(t, storetest.Open(t, dir), key, audit.Options{Now: stepClock()})
			keys := newExampleKeys(t)
			for _, e := range append(exampleEntries(t, keys), tc.frozen,
				audit.Entry{Kind: vocab.KindAgentUnfrozen, Agent: tc.frozen.Agent, Approver: "cli:alice", Reason: "unfrozen"}) {
				appendExample(t, l, e)
			}
			_, err = Export(bytes.NewReader(exportBytes(t, l, 0)), pubText(key), Options{})
			var ve *Error
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tc.want != "" && (!errors.As(err, &ve) || !strings.Contains(ve.Reason, tc.want)):
				t.Fatalf("verify: %v, want %q", err, tc.want)
			}
		})
	}
}
