package audit

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// TreeHash is the Merkle root of the log's first n entries, from the stored
// tree. A witness compares it with the root of a checkpoint it kept: equal
// roots mean the log extends that checkpoint; different ones, or a log
// shorter than n, mean it was rolled back or rewritten.
func (l *Log) TreeHash(ctx context.Context, n int64) (tlog.Hash, error) {
	snap, _, err := l.backend.Snapshot(ctx)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("audit: tree hash: %w", err)
	}
	defer snap.Rollback()
	h, err := readHead(ctx, snap)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("audit: tree hash: %w", err)
	}
	if n > h.seq {
		return tlog.Hash{}, fmt.Errorf("audit: tree hash of %d entries: the log holds %d", n, h.seq)
	}
	root, err := tlog.TreeHash(n, dbHashReader{ctx, snap})
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("audit: tree hash: %w", err)
	}
	return root, nil
}
