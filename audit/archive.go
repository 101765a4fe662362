package audit

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/tlog"
)

// Archiving is the one deliberate exception to "audit rows are never
// updated or deleted": the entries up to a point leave the database once
// an archive of them (an export with its own checkpoint) is written and
// verified. What stays keeps the log provable: every stored tree hash
// (audit_tree is never pruned), and in audit_pruned the archive's
// checkpoint and the hash of its last entry, where the next stored entry
// links. An export after pruning starts after the archive and is verified
// with it (audit verify --previous ARCHIVE). Only the SQLite log archives.

const prunedSchema = `
CREATE TABLE IF NOT EXISTS audit_pruned (
	through    INTEGER PRIMARY KEY, -- entries 1..through are gone from audit_entries
	hash       TEXT NOT NULL,       -- hex hash of entry through
	checkpoint TEXT NOT NULL,       -- the archive's signed checkpoint, of size through
	archive    TEXT NOT NULL,       -- hex SHA-256 of the archive file
	created    TEXT NOT NULL
);`

// ErrArchiveUnsupported is returned by the archive methods of a log on a
// backend other than SQLite (PostgreSQL replicas share one chain; pruning
// it is not built).
var ErrArchiveUnsupported = errors.New("audit: archive and prune: only the SQLite log can be archived; the PostgreSQL log (audit/auditpg) cannot yet")

// pruned is what audit_pruned keeps of the latest pruning.
type pruned struct {
	through    int64
	hash       [32]byte
	checkpoint []byte
}

// latestPruned reads the latest pruning, or a zero pruned if the log was
// never pruned (or its backend keeps no audit_pruned).
func (l *Log) latestPruned(ctx context.Context, q querier) (pruned, error) {
	var p pruned
	if _, ok := l.backend.(*sqliteBackend); !ok {
		return p, nil
	}
	var hashHex, note string
	err := q.QueryRowContext(ctx, `SELECT through, hash, checkpoint FROM audit_pruned ORDER BY through DESC LIMIT 1`).Scan(&p.through, &hashHex, &note)
	if errors.Is(err, sql.ErrNoRows) || err != nil && strings.Contains(err.Error(), "no such table") {
		// The table is made by the first pruning: a log never pruned
		// (or a read-only copy of one) has none.
		return pruned{}, nil
	}
	if err != nil {
		return p, fmt.Errorf("audit: read pruning: %w", err)
	}
	if p.hash, err = decodeHash(hashHex); err != nil {
		return p, &TamperError{p.through, "pruned entry's stored hash " + err.Error()}
	}
	p.checkpoint = []byte(note)
	return p, nil
}

// PrunedThrough is the seq of the last entry archived and pruned; 0 if
// none was.
func (l *Log) PrunedThrough(ctx context.Context) (int64, error) {
	p, err := l.latestPruned(ctx, l.db)
	return p.through, err
}

// prunedStart is where the stored chain begins after p: the Merkle
// frontier of the archived entries, from the stored tree. Its root is
// checked against p's checkpoint by prunedCheckpoint, once the keys that
// may have signed it are known.
func (l *Log) prunedStart(ctx context.Context, q querier, p pruned) (Frontier, *TamperError) {
	idx := FrontierIndexes(p.through)
	nodes, err := dbHashReader{ctx, q}.ReadHashes(idx)
	if err != nil {
		return Frontier{}, &TamperError{p.through, "stored tree of the archived entries: " + err.Error()}
	}
	return frontierOf(p.through, nodes), nil
}

// prunedCheckpoint checks p's checkpoint against the root of the stored
// tree of the archived entries. It was signed when the archive was
// written, by the key then in force: this server's key or one it rotated
// from in the stored entries (checkStored trusts those first).
func (l *Log) prunedCheckpoint(p pruned, root tlog.Hash) *TamperError {
	cp, err := openCheckpoint(p.checkpoint, l.trusted())
	if err != nil {
		return &TamperError{p.through, "archive checkpoint: " + err.Error()}
	}
	if cp.Size != p.through {
		return &TamperError{p.through, fmt.Sprintf("archive checkpoint covers %d entries, the pruning says %d", cp.Size, p.through)}
	}
	if root != cp.Root {
		return &TamperError{p.through, "the stored tree of the archived entries does not match the archive's checkpoint"}
	}
	return nil
}

// frontierOf is the Frontier of a tree of n leaves whose right-edge
// subtree roots are nodes (FrontierIndexes order).
func frontierOf(n int64, nodes []tlog.Hash) Frontier {
	f := Frontier{n: n, nodes: nodes}
	for level := 62; level >= 0; level-- {
		if size := int64(1) << level; n&size != 0 {
			f.sizes = append(f.sizes, size)
		}
	}
	return f
}

// ArchivePoint is the seq of the last entry written before t, 0 if none.
// An entry's time is never before the one it follows (seal), so a binary
// search over seq finds it in a few reads, not a scan of every body.
func (l *Log) ArchivePoint(ctx context.Context, before time.Time) (int64, error) {
	if _, ok := l.backend.(*sqliteBackend); !ok {
		return 0, ErrArchiveUnsupported
	}
	cut := before.UTC().Format(TimeFormat) // times sort as text
	var lo, hi int64                       // the answer is in [lo, hi]
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 1) - 1, COALESCE(MAX(seq), 0) FROM audit_entries`).Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("audit: archive: %w", err)
	}
	first := lo
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		var at string
		if err := l.db.QueryRowContext(ctx, `SELECT json_extract(body, '$.time') FROM audit_entries WHERE seq = ?`, mid).Scan(&at); err != nil {
			return 0, fmt.Errorf("audit: archive: entry %d: %w", mid, err)
		}
		if at < cut {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == first {
		return 0, nil // nothing stored before t
	}
	return lo, nil
}

// WriteArchive writes the stored entries after the last pruning up to
// seq through as an export, ending with a checkpoint of size through
// signed now, and returns that checkpoint. An archive after an earlier
// one starts after it and is verified with it as the previous export.
func (l *Log) WriteArchive(ctx context.Context, w io.Writer, through int64) ([]byte, error) {
	if _, ok := l.backend.(*sqliteBackend); !ok {
		return nil, ErrArchiveUnsupported
	}
	if l.broken != nil {
		return nil, l.broken
	}
	snap, _, err := l.backend.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	defer snap.Rollback()
	p, err := l.latestPruned(ctx, snap)
	if err != nil {
		return nil, err
	}
	h, err := readHead(ctx, snap)
	if err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	switch {
	case through <= p.through:
		return nil, fmt.Errorf("audit: archive through seq %d: entries through %d are already archived", through, p.through)
	case through >= h.seq:
		// The head must stay in the database: the next append links to it.
		return nil, fmt.Errorf("audit: archive through seq %d: the log ends at %d, and its last entry must stay", through, h.seq)
	}
	// The checkpoint is signed now, by the key in force; an auditor who
	// reads the archive alone trusts only the keys its entries hand the
	// log to, so it must reach the last rotation.
	if seq, err := lastRotation(ctx, snap); err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	} else if seq > through {
		return nil, fmt.Errorf("audit: archive through seq %d: the server key was rotated after it (key.rotated at seq %d), and the archive's checkpoint is signed by the key in force now; archive through seq %d or later", through, seq, seq)
	}
	root, err := tlog.TreeHash(through, dbHashReader{ctx, snap})
	if err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	msg, err := signCheckpoint(l.signer, through, root)
	if err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	if err := writeEntries(ctx, snap, bw, p.through, through); err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	line, err := EncodeCheckpointLine(msg)
	if err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	bw.Write(line)
	bw.WriteByte('\n')
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("audit: archive: %w", err)
	}
	return msg, nil
}

// Pruning names a written and verified archive whose entries Prune
// removes.
type Pruning struct {
	Checkpoint    []byte // the archive's checkpoint (WriteArchive's)
	ArchiveSHA256 string // hex SHA-256 of the archive file
	Archive       string // where it was written, for the entry's reason
}

// pruneResult is the result member of an audit.pruned entry.
type pruneResult struct {
	ArchivedThrough int64  `json:"archived_through"`
	ArchiveSHA256   string `json:"archive_sha256"`
	ArchiveRoot     string `json:"archive_root"` // hex Merkle root of the archive's checkpoint
}

// pruneHook, in tests, runs inside the pruning transaction after the
// DELETE and before its COMMIT (a test kills the process there).
var pruneHook func()

// Prune removes the entries an archive holds. The caller must have
// written the archive (WriteArchive) and verified the file; Prune checks
// again what it can without the file: the checkpoint is the server's,
// and its root is that of the stored entries it covers, so the archive
// verified against it holds exactly those entries. It first appends an
// audit.pruned entry naming the archive, then removes the entries and
// records the pruning in one transaction: a crash leaves either every
// entry in place or the pruning whole.
func (l *Log) Prune(ctx context.Context, p Pruning) (Entry, error) {
	if _, ok := l.backend.(*sqliteBackend); !ok {
		return Entry{}, ErrArchiveUnsupported
	}
	if l.broken != nil {
		return Entry{}, l.broken
	}
	cp, err := OpenCheckpoint(p.Checkpoint, l.current().v)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: prune: archive %w", err)
	}
	if _, err := decodeHash(p.ArchiveSHA256); err != nil {
		return Entry{}, fmt.Errorf("audit: prune: archive sha256 is %v", err)
	}
	root, err := l.TreeHash(ctx, cp.Size)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: prune: %w", err)
	}
	if root != cp.Root {
		return Entry{}, fmt.Errorf("audit: prune: the archive's checkpoint (size %d) is not of this log's entries", cp.Size)
	}
	result, err := json.Marshal(pruneResult{cp.Size, p.ArchiveSHA256, hex.EncodeToString(cp.Root[:])})
	if err != nil {
		return Entry{}, err
	}
	e, err := l.Append(ctx, Entry{Kind: vocab.KindAuditPruned, Result: result,
		Reason: fmt.Sprintf("entries through seq %d archived to %s and removed from the database", cp.Size, p.Archive)})
	if err != nil {
		return Entry{}, err
	}
	if err := l.deleteArchived(ctx, cp.Size, p); err != nil {
		return e, err
	}
	return e, nil
}

// deleteArchived removes entries 1..through and records the pruning, in
// one transaction.
func (l *Log) deleteArchived(ctx context.Context, through int64, p Pruning) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit: prune: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, prunedSchema); err != nil {
		return fmt.Errorf("audit: prune: %w", err)
	}
	prev, err := l.latestPruned(ctx, tx)
	if err != nil {
		return err
	}
	if through <= prev.through {
		return fmt.Errorf("audit: prune: entries through %d are already pruned", prev.through)
	}
	var hash string
	if err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_entries WHERE seq = ?`, through).Scan(&hash); err != nil {
		return fmt.Errorf("audit: prune: entry %d: %w", through, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_pruned (through, hash, checkpoint, archive, created) VALUES (?, ?, ?, ?, ?)`,
		through, hash, string(p.Checkpoint), p.ArchiveSHA256, l.now().UTC().Format(TimeFormat)); err != nil {
		return fmt.Errorf("audit: prune: %w", err)
	}
	// The deliberate exception to never deleting audit rows (see above).
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_entries WHERE seq <= ?`, through); err != nil {
		return fmt.Errorf("audit: prune: %w", err)
	}
	if pruneHook != nil {
		pruneHook()
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit: prune: %w", err)
	}
	return nil
}

// writeEntries writes the stored entries after seq from up to seq upto,
// one a line.
func writeEntries(ctx context.Context, q querier, bw *bufio.Writer, from, upto int64) error {
	const page = 2000
	for from < upto {
		rows, err := q.QueryContext(ctx, `SELECT seq, body FROM audit_entries WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`, from, upto, page)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			var body []byte
			if err := rows.Scan(&from, &body); err != nil {
				rows.Close()
				return err
			}
			bw.Write(ExportLine(body))
			bw.WriteByte('\n')
			n++
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
		if n < page {
			break
		}
	}
	return nil
}
