package pinstore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/pinstore"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

var notes = config.Upstream{Name: "notes", Prefix: "notes__"}

func pinOf(t *testing.T, name, description string) upstream.Pin {
	t.Helper()
	p, err := upstream.PinOf(notes, &sdk.Tool{Name: name, Description: description, InputSchema: map[string]any{"type": "object"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func count(t *testing.T, log *audit.Log, kind vocab.Kind) int {
	t.Helper()
	all, err := log.Since(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range all {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// A change is recorded once, also across a reopened store (a restart);
// accept pins the listing, drops a removed tool's pin, and refuses when
// there is nothing to accept.
// The pins are on either engine; the log stays in a SQLite file of its
// own until audit runs on PostgreSQL.
func TestChangesAreRecordedOnceAndAccepted(t *testing.T) {
	storetest.Dialects(t, testChangesRecordedOnce)
}

func testChangesRecordedOnce(t *testing.T, db *store.DB) {
	ctx := context.Background()
	dir := t.TempDir()
	logDB := storetest.Connect(t, filepath.Join(dir, store.FileName))
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, logDB.DB, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	st, err := pinstore.Open(ctx, db, log)
	if err != nil {
		t.Fatal(err)
	}
	a, b := pinOf(t, "a", "A."), pinOf(t, "b", "B.")
	if err := st.PinFirst(ctx, "notes", []upstream.Pin{a, b}); err != nil {
		t.Fatal(err)
	}
	listed := []upstream.Pin{pinOf(t, "a", "A, changed.")} // b removed
	pins, _ := st.Pinned(ctx, "notes")
	changes := upstream.Compare(pins, listed, func(n string) bool { return n == "notes__b" })
	if len(changes) != 2 || changes[0].What[0] != "description" || changes[1].Policy != "tools.notes__b" {
		t.Fatalf("changes %+v", changes)
	}
	for range 2 {
		if err := st.Changed(ctx, "notes", changes); err != nil {
			t.Fatal(err)
		}
	}
	again, err := pinstore.Open(ctx, db, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Changed(ctx, "notes", changes); err != nil {
		t.Fatal(err)
	}
	if n := count(t, log, vocab.KindToolChanged); n != 2 {
		t.Fatalf("%d tool.changed entries, want 2", n)
	}
	if _, err := st.Accept(ctx, "notes", listed, "nope", "tester"); !errors.Is(err, pinstore.ErrNothingToAccept) {
		t.Fatalf("accept of a tool that did not change: %v", err)
	}
	accepted, err := st.Accept(ctx, "notes", listed, "", "tester")
	if err != nil || len(accepted) != 2 {
		t.Fatalf("accept: %v %+v", err, accepted)
	}
	pins, _ = st.Pinned(ctx, "notes")
	if len(pins) != 1 || pins["a"].SHA256 != listed[0].SHA256 || !strings.Contains(string(pins["a"].Definition), "A, changed.") {
		t.Fatalf("pins after accept %+v", pins)
	}
	if _, err := st.Accept(ctx, "notes", listed, "", "tester"); !errors.Is(err, pinstore.ErrNothingToAccept) {
		t.Fatalf("second accept: %v", err)
	}
	if n := count(t, log, vocab.KindToolAccepted); n != 2 {
		t.Fatalf("%d tool.accepted entries, want 2", n)
	}
}
