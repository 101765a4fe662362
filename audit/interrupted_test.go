package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// A call.interrupted entry (the server stopped while an approved call ran)
// counts as the request's one run: it verifies in place of call.executed,
// and nothing may run the request after it.
func TestInterruptedRunIsTheOneRun(t *testing.T) {
	dir := t.TempDir()
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubText(key)
	export := exampleExport(t, dir, key)
	failedSeq := int64(0)
	lines, _ := splitExport(t, export)
	for i, line := range lines {
		if bytes.Contains(line, []byte(`"kind":"call.failed"`)) {
			failedSeq = int64(i + 1)
		}
	}
	if failedSeq == 0 {
		t.Fatal("the example log has no call.failed")
	}
	interrupted := forge(t, export, key, at(failedSeq, func(e *Entry) {
		e.Kind, e.Reason, e.PolicySHA256 = KindCallInterrupted, "the server stopped while this ran", "" // not a decision
	}))
	if _, err := Verify(bytes.NewReader(interrupted), pub, VerifyOptions{}); err != nil {
		t.Fatalf("an interrupted run in place of the failure: %v", err)
	}
	ranAgain := forge(t, interrupted, key, func(es []Entry) []Entry {
		again := es[failedSeq-1]
		again.Kind, again.Reason, again.PolicySHA256 = KindCallExecuted, "", es[0].PolicySHA256 // the policy.loaded one
		return append(es[:failedSeq:failedSeq], append([]Entry{again}, es[failedSeq:]...)...)
	})
	_, err = Verify(bytes.NewReader(ranAgain), pub, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Seq != failedSeq+1 || !strings.Contains(ve.Reason, "already ran") {
		t.Fatalf("a run after the interrupted one: %v", err)
	}
}
