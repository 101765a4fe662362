package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/vocab"
)

// recentEntries finds the first entry at or after since by halving, and
// returns it and every later one: none is lost at a batch boundary, and
// none older comes along.
func TestRecentEntriesStartAtTheCutoff(t *testing.T) {
	const n = 1100 // more than one of recentEntries' batches of 1000
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var clock time.Time
	c := daemontest.Config(t, nil)
	db, log, err := OpenAudit(context.Background(), c, audit.Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	defer log.Close()
	for i := range n {
		clock = t0.Add(time.Duration(i) * time.Minute)
		if _, err := log.Append(context.Background(), audit.Entry{Kind: vocab.KindCallExecuted, Tool: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, first := range []int{0, 1, 999, 1000, 1001, n / 2, n - 1, n} {
		since := t0.Add(time.Duration(first)*time.Minute - 30*time.Second)
		got, err := recentEntries(context.Background(), log, since)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n-first {
			t.Errorf("since entry %d: %d entries, want %d", first, len(got), n-first)
			continue
		}
		for i, e := range got {
			if e.Tool != fmt.Sprint(first+i) {
				t.Errorf("since entry %d: entry %d is %q, want %d", first, i, e.Tool, first+i)
				break
			}
		}
	}
}
