package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/countersign/countersign/vocab"
)

// Bounds on what a call's parties can make the log keep (format 3).
//
// A reason or a result can hold what an upstream server or an agent chose
// to say: an upstream's JSON-RPC error of megabytes, a secret in an error
// message. The signed log never forgets, so it keeps at most the first
// MaxText bytes of each, cut on a UTF-8 boundary, and, when it cut, the
// SHA-256 and size of the whole (reason_sha256 and reason_size;
// result_sha256 and result_size, over the result's JCS form, with result
// then a JSON string of that form's first MaxText bytes). Someone holding
// the whole text can prove it is the one the log names; nobody can read
// past the first KiB from the log.
//
// A call's arguments are stored once: in its call.allowed (a routine or
// granted call) or its approval.requested. A later entry of the same call
// keeps args_sha256 only, with args_seq naming the call.allowed, or, for
// an approval request's entries, request_id naming the request; Append
// drops args from such entries (argsStoredEarlier).

// MaxText is how many bytes of a reason or a result the log keeps.
const MaxText = 1024

// Bound cuts e's reason and result to MaxText bytes as Append stores
// them, recording the SHA-256 and size of what it cut. It is idempotent,
// and what it leaves is valid UTF-8, so that a caller comparing an entry
// it holds with the stored one (after a crash, say) can bound its copy
// first. A result is measured in its line form (lineJSON: RFC 8785, with
// U+2028 and U+2029 escaped), the form a format 2 line stores.
func Bound(e *Entry) {
	e.Reason = validUTF8(e.Reason)
	if len(e.Reason) > MaxText {
		e.Reason, e.ReasonSHA256, e.ReasonSize = cut(e.Reason)
	}
	if len(e.Result) == 0 || e.ResultSHA256 != "" {
		return // nothing to cut, or cut already
	}
	form, err := lineJSON(e.Result)
	if err != nil || len(form) <= MaxText {
		return // prepare refuses what is not JSON
	}
	var head string
	head, e.ResultSHA256, e.ResultSize = cut(string(form))
	e.Result, _ = json.Marshal(head)
}

// boundsBroken says how a format 3 entry breaks the bounds Bound keeps,
// or "": the writer refuses such an entry and the verifier such a line.
func boundsBroken(e *Entry) string {
	if e.ReasonSHA256 == "" && e.ReasonSize == 0 {
		if len(e.Reason) > MaxText {
			return fmt.Sprintf("reason of %d bytes, over %d, without reason_sha256 and reason_size", len(e.Reason), MaxText)
		}
	} else if why := cutBroken(e.Reason, e.ReasonSHA256, e.ReasonSize); why != "" {
		return "reason " + why
	}
	if e.ResultSHA256 == "" && e.ResultSize == 0 {
		if len(e.Result) > MaxText {
			return fmt.Sprintf("result of %d bytes, over %d, without result_sha256 and result_size", len(e.Result), MaxText)
		}
		return ""
	}
	var head string
	if err := json.Unmarshal(e.Result, &head); err != nil {
		return "result_sha256 is set, but result is not the JSON string of its first bytes"
	}
	if why := cutBroken(head, e.ResultSHA256, e.ResultSize); why != "" {
		return "result " + why
	}
	return ""
}

// cutBroken checks what cut returned: a head of MaxText bytes less at
// most a partial rune, and the hash and size of a longer whole.
func cutBroken(head, sum string, size int64) string {
	if _, err := decodeHash(sum); err != nil {
		return "sha256 is " + err.Error()
	}
	switch {
	case size <= MaxText:
		return fmt.Sprintf("size %d: a text of at most %d bytes is kept whole", size, MaxText)
	case len(head) > MaxText || len(head) <= MaxText-utf8.UTFMax:
		return fmt.Sprintf("keeps %d bytes of the whole; the log keeps the first %d, cut on a UTF-8 boundary", len(head), MaxText)
	}
	return ""
}

// cut is the first MaxText bytes of s, ending on a rune boundary, and the
// hex SHA-256 and size of all of s.
func cut(s string) (head, sum string, size int64) {
	n := MaxText
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	h := sha256.Sum256([]byte(s))
	return s[:n], hex.EncodeToString(h[:]), int64(len(s))
}

// argsStoredEarlier reports whether e is a later entry of a call whose
// arguments an earlier entry holds: an outcome naming its call.allowed
// (args_seq), or any entry of an approval request but the request itself.
func argsStoredEarlier(e *Entry) bool {
	return e.ArgsSeq != 0 || e.RequestID != "" && e.Kind != vocab.KindApprovalRequested
}

// formatRules checks what one entry of format 2 or later must hold on its
// own: args that match args_sha256, and in format 3 the bounds and the
// form of args_seq. (Where the args are is checked in order: argsAt.)
func formatRules(e *Entry) string {
	if e.V < 2 {
		return ""
	}
	if len(e.Args) > 0 {
		sum, err := DecodeArgsSHA256(e.ArgsSHA256)
		if err != nil {
			return err.Error()
		}
		if got, err := ArgsSHA256(e.Args); err != nil || got != sum {
			return "args do not match args_sha256"
		}
	}
	if e.V < 3 {
		if e.ArgsSeq != 0 || e.ReasonSHA256 != "" || e.ReasonSize != 0 || e.ResultSHA256 != "" || e.ResultSize != 0 {
			return fmt.Sprintf("format %d entry carries args_seq, reason_sha256, reason_size, result_sha256 or result_size, which format 3 added", e.V)
		}
		return ""
	}
	if why := boundsBroken(e); why != "" {
		return why
	}
	switch {
	case e.ArgsSeq == 0:
	case e.Kind != vocab.KindCallExecuted && e.Kind != vocab.KindCallFailed && e.Kind != vocab.KindCallInterrupted:
		return string(e.Kind) + " carries args_seq; only a call's outcome does"
	case e.RequestID != "":
		return string(e.Kind) + " carries both args_seq and request_id; a request's entries find the args through request_id"
	case e.ArgsSeq < 0 || e.ArgsSeq >= e.Seq:
		return fmt.Sprintf("args_seq %d is not an earlier entry", e.ArgsSeq)
	}
	return ""
}
