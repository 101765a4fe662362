package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// What an upstream says is kept to its first KiB, with the hash and size
// of the whole, whatever the writer: a 5 MB error, a secret past the first
// KiB, a long result. The export verifies.
func TestAppendBoundsReasonAndResult(t *testing.T) {
	key := seededKey(7)
	l := openLog(t, storetest.Open(t, t.TempDir()), key, audit.Options{})
	const secret = "sk_live_DO_NOT_LOG_0123456789"
	huge := strings.Repeat("upstream said no; ", 5<<20/18)
	// A 2-byte rune across the cut: the head ends before it.
	tail := strings.Repeat("a", audit.MaxText-1) + "é and then " + secret
	result := `{"echo":"` + strings.Repeat("z", 3000) + secret + `"}`
	for _, tc := range []struct {
		name  string
		whole string
	}{{"5 MB error", huge}, {"secret past the first KiB", tail}} {
		t.Run(tc.name, func(t *testing.T) {
			allowed := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallAllowed, Agent: "a", Tool: "up__x", Args: json.RawMessage(`{}`), Decision: "low"})
			e := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallFailed, Agent: "a", Tool: "up__x", Args: json.RawMessage(`{}`), ArgsSeq: allowed.Seq, Decision: "low", Reason: tc.whole})
			if len(e.Reason) > audit.MaxText || !strings.HasPrefix(tc.whole, e.Reason) || !utf8.ValidString(e.Reason) || len(e.Reason) < audit.MaxText-3 {
				t.Fatalf("stored reason of %d bytes is not the first KiB of the whole", len(e.Reason))
			}
			sum := sha256.Sum256([]byte(tc.whole))
			if e.ReasonSHA256 != hex.EncodeToString(sum[:]) || e.ReasonSize != int64(len(tc.whole)) {
				t.Fatalf("reason_sha256 %s reason_size %d, want the whole's %x %d", e.ReasonSHA256, e.ReasonSize, sum, len(tc.whole))
			}
			if len(e.Args) != 0 || e.ArgsSeq != allowed.Seq {
				t.Fatalf("the outcome stores args again (%d bytes) or lost args_seq (%d)", len(e.Args), e.ArgsSeq)
			}
		})
	}
	e := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallExecuted, Agent: "a", Tool: "up__y", Args: json.RawMessage(`{}`), Decision: "low", Result: json.RawMessage(result)})
	var head string
	if err := json.Unmarshal(e.Result, &head); err != nil || len(head) != audit.MaxText || !strings.HasPrefix(result, head) {
		t.Fatalf("stored result %.80s… is not a string of the first KiB", e.Result)
	}
	sum := sha256.Sum256([]byte(result))
	if e.ResultSHA256 != hex.EncodeToString(sum[:]) || e.ResultSize != int64(len(result)) {
		t.Fatalf("result_sha256 %s result_size %d, want the whole's", e.ResultSHA256, e.ResultSize)
	}
	export := exportBytes(t, l, 0)
	if strings.Contains(string(export), secret) {
		t.Fatal("the secret past the first KiB is in the export")
	}
	if len(export) > 16<<10 {
		t.Fatalf("export of 6 entries is %d bytes", len(export))
	}
	if _, err := Export(strings.NewReader(string(export)), pubText(key), Options{AllSignatures: true}); err != nil {
		t.Fatal(err)
	}
}
