package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
)

// The fast hash writes time as the writer sets it, unescaped. An entry
// whose time smuggles another member's text (moving the tool into it) has
// the same bytes under that encoding; verify must judge it by the full
// encoding and refuse it, keeping the recorded hash and signature.
func TestVerifyRefusesMembersSmuggledIntoTime(t *testing.T) {
	l := openLog(t, storetest.Open(t, filepath.Join(t.TempDir(), "a.db")), seededKey(7), audit.Options{Now: stepClock()})
	for _, e := range sampleEntries() {
		mustAppend(t, l, e)
	}
	if _, err := l.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	export := exportBytes(t, l, 0)
	if _, err := Export(bytes.NewReader(export), pubText(seededKey(7)), Options{}); err != nil {
		t.Fatalf("the honest export: %v", err)
	}
	lines, cp := splitExport(t, export)
	var e audit.Entry
	if err := json.Unmarshal(lines[0], &e); err != nil {
		t.Fatal(err)
	}
	if e.Tool == "" || e.Agent == "" {
		t.Fatalf("entry 1 has no tool to move: %s", lines[0])
	}
	// Sorted members: ..."seq", "time", "tool"... Fold `"tool":"X"` into
	// time: the writer's encoding of the forged entry is byte for byte
	// the honest one's.
	e.Time += `","tool":"` + e.Tool
	e.Tool = ""
	forged, err := encodeLine(&e)
	if err != nil {
		t.Fatal(err)
	}
	lines[0] = forged
	wantVerifyErr(t, joinExport(lines, cp), pubText(seededKey(7)), nil, 1, "hash does not match")
}
