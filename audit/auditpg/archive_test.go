package auditpg

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// TestArchiveRefusedOnPostgreSQL: archiving is built for the SQLite log
// only; on PostgreSQL every step refuses, saying so, and nothing changes.
func TestArchiveRefusedOnPostgreSQL(t *testing.T) {
	ctx := context.Background()
	l := openLog(t, storetest.Connect(t, pgtest.URL(t)), seededKey(2), audit.Options{})
	for i := range 3 {
		mustAppend(t, l, routine(i))
	}
	if _, err := l.ArchivePoint(ctx, time.Now().Add(time.Hour)); !errors.Is(err, audit.ErrArchiveUnsupported) {
		t.Fatalf("ArchivePoint: %v", err)
	}
	if _, err := l.WriteArchive(ctx, &bytes.Buffer{}, 2); !errors.Is(err, audit.ErrArchiveUnsupported) {
		t.Fatalf("WriteArchive: %v", err)
	}
	if _, err := l.Prune(ctx, audit.Pruning{}); !errors.Is(err, audit.ErrArchiveUnsupported) {
		t.Fatalf("Prune: %v", err)
	}
	if last, err := l.LastSeq(ctx); err != nil || last != 3 {
		t.Fatalf("LastSeq = %d, %v", last, err)
	}
}
