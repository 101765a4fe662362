package authzdetails

import (
	"encoding/json"
	"fmt"
	"slices"
)

// ClientClaims is the member of an authorization detail that holds what
// the client claimed of a fact the server established itself (a CIBA
// payment's counterpartyKnown, a secret's classification), where the two
// differ: the detail states the server's fact, and the display quotes the
// claim as the agent's words, after the server's lines, so a claim can
// neither remove a warning nor pass for the server's finding.
const ClientClaims = "clientClaims"

// claimLines quotes the client's claims of each detail, one line each:
//
//	The agent wrote (claim counterpartyKnown, not what the server found): “true”
func claimLines(details []json.RawMessage) []string {
	var out []string
	for i, raw := range details {
		var d struct {
			Claims map[string]json.RawMessage `json:"clientClaims"`
		}
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		keys := make([]string, 0, len(d.Claims))
		for k := range d.Claims {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			what := "claim " + Clean(k, 40) + ", not what the server found"
			if len(details) > 1 {
				what = fmt.Sprintf("action %d, %s", i+1, what)
			}
			out = append(out, AgentPrefix+" ("+what+"): “"+Clean(compact(d.Claims[k]), 80)+"”")
		}
	}
	return out
}
