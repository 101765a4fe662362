package audit

import (
	"encoding/json"
	"strings"
	"testing"
)

// Bound is idempotent, so a caller can compare its copy of an entry with
// the stored one (approval's outbox does after a crash).
func TestBoundIsIdempotent(t *testing.T) {
	e := Entry{Reason: strings.Repeat("€", 1000), Result: json.RawMessage(`["` + strings.Repeat(`\"q\"`, 900) + `"]`)}
	Bound(&e)
	once := e
	Bound(&e)
	if e.Reason != once.Reason || string(e.Result) != string(once.Result) || e.ReasonSHA256 != once.ReasonSHA256 || e.ResultSize != once.ResultSize {
		t.Fatal("a second Bound changed the entry")
	}
	if why := boundsBroken(&e); why != "" {
		t.Fatal(why)
	}
}
