package authzdetails

import (
	"slices"
	"strings"
	"unicode"
)

// AgentPrefix starts a display line that quotes text the agent wrote; the
// page shows those lines as a quotation from the agent, apart from the
// server's rendering of amount, payee, account and environment, so that a
// memo saying "approved by CFO" reads as the agent's claim, not ours.
const AgentPrefix = "The agent wrote"

// freeText are the authorization_details members of the generic rendering
// that carry prose rather than a value the server checks.
var freeText = map[string]bool{
	"description": true, "memo": true, "note": true, "comment": true, "message": true,
	"reason": true, "remittanceInformationUnstructured": true, "purpose": true,
}

// agentLine quotes an agent's text, whole and untrimmed, on one display
// line:
//
//	The agent wrote (reference): “Invoice 42”
func agentLine(what, text string) string {
	return AgentPrefix + " (" + what + "): “" + visible(text, whole) + "”"
}

// IsAgentLine reports whether a display line quotes the agent's own text
// (AgentPrefix); the page shows those apart, as quotations.
func IsAgentLine(l string) bool { return strings.HasPrefix(l, AgentPrefix+" (") }

// scriptWarning flags a name whose letters come from more than one script
// (Latin "Acme" spelled with a Cyrillic "А"): it may be made to look like a
// name the approver knows. Digits, punctuation and combining marks (scripts
// Common and Inherited) do not count. Without a maintained confusables
// (skeleton) table in Go, mixing scripts is what is flagged; a whole name
// in one foreign script is shown as it is.
func scriptWarning(what, name string) string {
	scripts := scriptsOf(name)
	if len(scripts) < 2 {
		return ""
	}
	return WarningPrefix + what + " MIXES SCRIPTS (" + strings.Join(scripts, ", ") + "): it may imitate another name; check it letter by letter"
}

// scriptsOf returns the sorted names of the scripts of s's letters.
func scriptsOf(s string) []string {
	var out []string
	for _, r := range s {
		if !unicode.IsLetter(r) {
			continue
		}
		for name, table := range unicode.Scripts {
			if name == "Common" || name == "Inherited" || !unicode.Is(table, r) {
				continue
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
			break
		}
	}
	slices.Sort(out)
	return out
}
