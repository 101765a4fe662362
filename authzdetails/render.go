// Package authzdetails owns the RFC 9396 authorization_details types
// Countersign knows (payment_initiation, deployment, secret_access,
// mcp_tool_call, and any other rendered generically): how each is rendered
// into the display text the approver's key signs, and the limits on what
// can be shown in full. The approval service stores and signs that text,
// the approver page lays it out, and CIBA validates requests against the
// same types, so all three read one source. It imports nothing of ours.
//
// The shapes rendered specially (RFC 9396 objects; other types fall back
// to a generic rendering of their fields):
//
//	{"type":"payment_initiation","instructedAmount":{"currency":"USD","amount":"500000.00"},
//	 "creditorName":"Vendor X","debtorAccount":{"id":"operating"},"newCounterparty":true,
//	 "remittanceInformationUnstructured":"inv 42","idempotencyKey":"pay-1"}
//	{"type":"deployment","service":"api","version":"1.4.2","environment":"production"}
//	{"type":"secret_access","name":"prod-db-password","classification":"restricted"}
//	{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{"path":"/srv/a.txt","mode":420}}
//
// ("counterpartyKnown": false is accepted as well as "newCounterparty": true.)
//
// Every value is shown whole; a request whose display would exceed
// MaxShownValues, MaxShownChars or MaxShownBytes is refused
// (*ShowLimitError).
package authzdetails

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Render is the exact text the approver is shown and signs over
// (through its SHA-256 in the digest). It is rendered from
// authorization_details, never from free text the agent wrote, one
// "Label: value" line each, so the page can lay it out without changing a
// character. Values are cleaned of control and bidi-formatting characters:
// a payee name must not be able to forge a line or reorder what is read.
// (mcp_tool_call arguments are quoted with those characters shown as
// escapes instead; see renderMCPToolCall.)
//
// Nothing the backend receives is cut or left out: every renderer shows
// each argument whole (a tool with no details has its arguments listed as
// an upstream call's are), and a display over the limits in limits.go is
// an error (*ShowLimitError), not a shorter text. code is the
// request's code, shown last; its length counts against MaxShownBytes.
//
// Free text the agent wrote (a payment's reference, a description) is not
// the server's word: it comes last, after the server's lines, each line
// labelled "The agent wrote (...)" with the text in quotation marks, and the
// page shows it as a quotation apart from the rest (agenttext.go).
func Render(details []json.RawMessage, args json.RawMessage, tool, agent, code string) (string, error) {
	var lines, quoted []string
	sh := &shown{}
	for i, raw := range details {
		if len(details) > 1 {
			lines = append(lines, fmt.Sprintf("Action %d of %d", i+1, len(details)))
		}
		for _, l := range renderDetail(raw, sh) {
			if IsAgentLine(l) {
				if len(details) > 1 {
					l = strings.Replace(l, AgentPrefix+" (", fmt.Sprintf("%s (action %d, ", AgentPrefix, i+1), 1)
				}
				quoted = append(quoted, l)
				continue
			}
			lines = append(lines, l)
		}
	}
	quoted = append(quoted, claimLines(details)...)
	if len(details) == 0 {
		lines = append(lines, "Action: "+Clean(tool, 100)+" (no details given)")
		if len(args) > 0 {
			lines = append(lines, renderArgs(args, sh)...)
		}
	}
	lines = append(lines,
		"Tool: "+Clean(tool, 100),
		"Agent: "+Clean(agent, 100),
		"Code: "+code,
	)
	display := strings.Join(append(lines, quoted...), "\n")
	if err := sh.check(len(display)); err != nil {
		return "", err
	}
	return display, nil
}

// WarningPrefix starts a display line the page shows as a warning.
const WarningPrefix = "Warning: "

func renderDetail(raw json.RawMessage, sh *shown) []string {
	var d map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return []string{"Action: (unreadable authorization detail)"}
	}
	typ := str(d["type"])
	switch typ {
	case TypePayment:
		var amt struct {
			Currency string          `json:"currency"`
			Amount   json.RawMessage `json:"amount"`
		}
		json.Unmarshal(d["instructedAmount"], &amt)
		payee := sh.full("To", str(d["creditorName"]))
		lines := []string{
			"Payment: " + formatAmount(amt.Currency, amt.Amount, sh),
			"To: " + payee,
		}
		if w := scriptWarning("PAYEE NAME", payee); w != "" {
			lines = append(lines, w)
		}
		if acct := account(d["creditorAccount"], sh); acct != "" {
			lines = append(lines, "To account: "+acct)
		}
		if acct := account(d["debtorAccount"], sh); acct != "" {
			lines = append(lines, "From: "+acct)
		}
		if isTrue(d["newCounterparty"]) || isFalse(d["counterpartyKnown"]) {
			lines = append(lines, WarningPrefix+"NEW COUNTERPARTY, never paid before")
		}
		if key := str(d["idempotencyKey"]); key != "" {
			lines = append(lines, "Idempotency key: "+sh.full("Idempotency key", key)+" (a repeat with this key pays once)")
		}
		if ref := str(d["remittanceInformationUnstructured"]); ref != "" {
			sh.text("reference", ref)
			lines = append(lines, agentLine("reference", ref))
		}
		return lines
	case TypeDeployment:
		env := sh.full("Environment", str(d["environment"]))
		lines := []string{
			"Deploy: " + sh.full("Deploy", str(d["service"])) + " version " + sh.full("version", str(d["version"])),
			"Environment: " + env,
		}
		if strings.EqualFold(env, "production") || strings.EqualFold(env, "prod") {
			lines = append(lines, WarningPrefix+"PRODUCTION environment")
		}
		return lines
	case TypeSecretAccess:
		name := str(d["name"])
		if name == "" {
			name = str(d["secret"])
		}
		class := sh.full("Classification", str(d["classification"]))
		lines := []string{
			"Read secret: " + sh.full("Read secret", name),
			"Classification: " + class,
		}
		if strings.EqualFold(class, "restricted") || strings.EqualFold(class, "confidential") {
			lines = append(lines, WarningPrefix+strings.ToUpper(class)+" secret")
		}
		return lines
	case TypeMCPToolCall:
		return renderMCPToolCall(raw, sh)
	}
	// Generic: type, actions, then every other field in key order.
	lines := []string{"Action: " + sh.full("Action", cmp.Or(typ, "(untyped)"))}
	keys := make([]string, 0, len(d))
	for k := range d {
		if k != "type" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		sh.value()
		label := sh.full("a key", k)
		v := compact(d[k])
		sh.text(label, v)
		if freeText[k] {
			lines = append(lines, agentLine(label, v))
			continue
		}
		lines = append(lines, label+": "+Clean(v, whole))
	}
	return lines
}

// str returns a JSON string's value, or the compact JSON of anything else.
func str(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return compact(raw)
}

func compact(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

func isTrue(raw json.RawMessage) bool  { return string(bytes.TrimSpace(raw)) == "true" }
func isFalse(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "false" }

// account renders an RFC 9396 account object ({"iban":...} or {"id":...})
// or a plain string.
func account(raw json.RawMessage, sh *shown) string {
	if len(raw) == 0 {
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return sh.full("account", str(raw))
	}
	for _, k := range []string{"id", "iban", "name", "number"} {
		if v := str(m[k]); v != "" {
			return sh.full("account", v)
		}
	}
	return sh.full("account", compact(raw))
}

// formatAmount renders "USD 500,000.00" from a decimal string or number.
// Anything that is not a plain decimal is shown quoted, never reinterpreted.
func formatAmount(currency string, raw json.RawMessage, sh *shown) string {
	amount := str(raw)
	sh.text("amount", amount)
	cur := sh.full("currency", strings.ToUpper(currency))
	if cur == "" {
		cur = "(no currency)"
	}
	neg := strings.HasPrefix(amount, "-")
	digits := strings.TrimPrefix(amount, "-")
	intPart, frac, hasFrac := strings.Cut(digits, ".")
	if intPart == "" || !allDigits(intPart) || (hasFrac && (frac == "" || !allDigits(frac))) {
		return cur + " " + fmt.Sprintf("%q", Clean(amount, whole)) + " (not a plain decimal)"
	}
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if hasFrac {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return cur + " " + out
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// whole is Clean's max for a value that must not be cut: one the backend
// receives (the display limits bound it instead).
const whole = -1

// full cleans a value shown whole and tallies it under label at.
func (s *shown) full(at, v string) string {
	s.text(at, v)
	return Clean(v, whole)
}

// Clean makes an untrusted value safe to put on one display line: control
// and formatting characters (newlines, bidi overrides, zero-width joiners)
// become U+FFFD so their presence stays visible, invalid UTF-8 likewise, and
// the value is cut at max runes (never, with max = whole), and trimmed.
func Clean(s string, max int) string {
	return strings.TrimSpace(visible(s, max))
}

// visible is Clean without the trim: for a quotation, whose quotation
// marks show a leading or trailing space.
func visible(s string, max int) string {
	var b strings.Builder
	n := 0
	for i, w := 0, 0; i < len(s); i += w {
		r, size := utf8.DecodeRuneInString(s[i:])
		w = size
		if n == max {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError && size <= 1:
			r = unicode.ReplacementChar
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			r = unicode.ReplacementChar
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
