package verify

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// Bytes that are not UTF-8 become U+FFFD, one per byte, before the entry
// is hashed, so the line reads back as written and verifies.
func TestInvalidUTF8IsReplacedBeforeHashing(t *testing.T) {
	l := openLogWith(t, seededKey(1), nil)
	e := mustAppend(t, l, audit.Entry{Kind: vocab.KindCallRejected, Reason: "backend said \xff\xfe!", Args: json.RawMessage(`{"a":"\u00e9"}`)})
	if e.Reason != "backend said \ufffd\ufffd!" {
		t.Fatalf("reason %q", e.Reason)
	}
	if _, err := Export(bytes.NewReader(exportBytes(t, l, 0)), pubText(seededKey(1)), Options{AllSignatures: true}); err != nil {
		t.Fatal(err)
	}
}
