package authz

import (
	"slices"
	"strings"

	"github.com/countersign/countersign/config"
)

// UsageRead names the fields of usage a tool's rules may read: those its
// conditions name as usage.<field>. Anything else that reads the variable
// (usage["..."], usage passed whole, a name the list does not know) may
// read any field, and so reads them all. The guard locks only the keys
// of read fields in the shared usage windows: a rule on total_amount_24h
// serializes the tool's calls cluster-wide, one on the payee only that
// agent's calls to that payee.
func UsageRead(rules []config.Rule) map[string]bool {
	read := map[string]bool{}
	for _, r := range rules {
		w := r.When
		for off := 0; ; {
			j := strings.Index(w[off:], "usage")
			if j < 0 {
				break
			}
			i := off + j
			off = i + 1
			if i > 0 && (isIdent(w[i-1]) || w[i-1] == '.') {
				continue // another name ending in usage, or a field of another value
			}
			rest := w[i+len("usage"):]
			if rest != "" && isIdent(rest[0]) {
				continue // a longer name beginning with usage
			}
			name, ok := fieldAfterDot(rest)
			if !ok {
				return allUsage()
			}
			read[name] = true
		}
	}
	return read
}

// allUsage is every field of usage.
func allUsage() map[string]bool {
	read := map[string]bool{}
	for _, k := range UsageKeys() {
		read[k] = true
	}
	return read
}

// fieldAfterDot reads ".<field>" at the start of s, for a known field.
func fieldAfterDot(s string) (string, bool) {
	if !strings.HasPrefix(s, ".") {
		return "", false
	}
	s = s[1:]
	n := 0
	for n < len(s) && isIdent(s[n]) {
		n++
	}
	if slices.Contains(UsageKeys(), s[:n]) {
		return s[:n], true
	}
	return "", false
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
