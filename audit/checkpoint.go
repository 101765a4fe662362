package audit

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint returns a signed checkpoint of the whole log, writing and
// storing a new one unless the latest stored one already covers every
// entry. A log that failed verification signs nothing.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	if l.broken != nil {
		return nil, l.broken
	}
	// Read head, tree and latest checkpoint from one snapshot: another
	// process may be appending.
	snap, _, err := l.backend.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	defer snap.Rollback()
	h, err := readHead(ctx, snap)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if latest, err := l.latestCheckpoint(ctx, snap); err != nil {
		return nil, err
	} else if latest != nil && latest.Size == h.seq {
		return latest.Note, nil
	}
	if h.treeSize != tlog.StoredHashCount(h.seq) {
		return nil, &TamperError{h.seq, fmt.Sprintf("tree has %d stored hashes, want %d", h.treeSize, tlog.StoredHashCount(h.seq))}
	}
	root, err := tlog.TreeHash(h.seq, dbHashReader{ctx, snap})
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	snap.Rollback()
	msg, err := signCheckpoint(l.current(), h.seq, root)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	if l.readOnly {
		return msg, nil
	}
	if _, err := l.db.ExecContext(ctx, `INSERT INTO audit_checkpoints (size, note, created) VALUES (?, ?, ?)`,
		h.seq, string(msg), l.now().UTC().Format(TimeFormat)); err != nil {
		return nil, fmt.Errorf("audit: checkpoint: %w", err)
	}
	return msg, nil
}

// latestCheckpoint returns the stored checkpoint with the largest size,
// verified, or nil if there is none.
func (l *Log) latestCheckpoint(ctx context.Context, q querier) (*Checkpoint, error) {
	var size int64
	var msg string
	err := q.QueryRowContext(ctx, `SELECT size, note FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1`).Scan(&size, &msg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint: %w", err)
	}
	cp, err := openCheckpoint([]byte(msg), l.trusted())
	if err != nil {
		return nil, &TamperError{size, err.Error()}
	}
	if cp.Size != size {
		return nil, &TamperError{size, fmt.Sprintf("checkpoint row says size %d, its note says %d", size, cp.Size)}
	}
	return cp, nil
}

// checkStored verifies the stored log (see Open). It returns the first
// problem as a *TamperError, or a plain error if it could not read.
func (l *Log) checkStored(ctx context.Context, q querier, stored *Head) (*TamperError, error) {
	var first *TamperError
	note := func(t *TamperError) {
		if first == nil || t.Seq < first.Seq {
			first = t
		}
	}
	cp, err := l.latestCheckpoint(ctx, q)
	var te *TamperError
	switch {
	case errors.As(err, &te):
		note(te)
		cp = nil
	case err != nil:
		return nil, err
	}
	var cpSize int64
	switch {
	case cp != nil:
		cpSize = cp.Size
	case te != nil:
		// The claimed size still bounds the tail; checking every
		// signature would only repeat the failure slowly.
		cpSize = te.Seq
	}

	// After a pruning the stored chain starts past the archive, on the
	// archive's last hash and tree (archive.go).
	pr, err := l.latestPruned(ctx, q)
	var pte *TamperError
	switch {
	case errors.As(err, &pte):
		note(pte)
	case err != nil:
		return nil, err
	}
	var (
		want = int64(1)
		prev [32]byte
		fr   Frontier
	)
	if pr.through > 0 && pte == nil {
		var ferr *TamperError
		if fr, ferr = l.prunedStart(ctx, q, pr); ferr != nil {
			note(ferr)
		}
		want, prev = pr.through+1, pr.hash
	}
	first1, archivedRoot := want, fr.Root()

	// The key in force at the first stored entry: the previous key of the
	// first stored rotation, or this server's. A rotation inside an
	// archive left the key it handed to in force at the archive's end, so
	// a pruned log needs nothing more: that key signs the stored entries
	// up to the next stored rotation. Read before the entries' rows: a
	// snapshot may be one connection.
	pub, err := firstKey(ctx, q, l.signer.pub)
	var fk *TamperError
	if errors.As(err, &fk) {
		note(fk)
		pub = l.signer.pub
	} else if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT seq, hash, body FROM audit_entries ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("audit: read log: %w", err)
	}
	defer rows.Close()
	next := func() (Line, bool, error) {
		if !rows.Next() {
			return Line{}, false, rows.Err()
		}
		var it Line
		if err := rows.Scan(&it.rowSeq, &it.rowHash, &it.Bytes); err != nil {
			return it, false, err
		}
		it.fromDB = true
		// Signatures are implied by a verified checkpoint's root; check
		// the first one (a swapped key shows at seq 1) and the tail.
		it.CheckSig = it.rowSeq == first1 || it.rowSeq > cpSize
		return it, true, nil
	}
	inForce := pub
	var retired []string // the keys before inForce, oldest first
	chainErr := CheckLines(next, pub, func(r *Checked) error {
		if r.Seq != want {
			if r.Seq > want {
				return &TamperError{want, fmt.Sprintf("missing: the next stored entry is seq %d", r.Seq)}
			}
			return &TamperError{want, fmt.Sprintf("out of order: found seq %d", r.Seq)}
		}
		if r.Problem != "" {
			return &TamperError{want, r.Problem}
		}
		if r.Entry.Kind == vocab.KindKeyRotated {
			next, why := RotationProblem(r.Entry, inForce)
			if why != "" {
				return &TamperError{r.Seq, why}
			}
			inForce = next
			retired = append(retired, r.Entry.PreviousKey)
		}
		if r.Prev != prev {
			return &TamperError{r.Seq, "prev_hash does not match the hash of the entry before"}
		}
		prev = r.Hash
		fr.Add(LeafHash(r.Hash))
		if cp != nil && fr.Size() == cp.Size && fr.Root() != cp.Root {
			return &TamperError{cp.Size, "checkpoint root does not match the entries up to this seq"}
		}
		want++
		return nil
	})
	var ve *TamperError
	switch {
	case errors.As(chainErr, &ve):
		note(ve)
	case chainErr != nil:
		return nil, fmt.Errorf("audit: read log: %w", chainErr)
	}
	last := want - 1
	if ve == nil && !inForce.Equal(l.signer.pub) {
		note(&TamperError{last, "the log's key in force is " + PublicKeyText(inForce) + ", not this server's key " + PublicKeyText(l.signer.pub)})
	}
	l.trust(retired)
	if pr.through > 0 && pte == nil {
		if perr := l.prunedCheckpoint(pr, archivedRoot); perr != nil {
			note(perr)
		}
	}
	if ve == nil && cp != nil && cp.Size > last {
		note(&TamperError{last + 1, fmt.Sprintf("missing: the checkpoint covers %d entries, the log ends at %d", cp.Size, last)})
	}
	if first == nil {
		var treeSize int64
		if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(idx)+1, 0) FROM audit_tree`).Scan(&treeSize); err != nil {
			return nil, fmt.Errorf("audit: read tree: %w", err)
		}
		if treeSize != tlog.StoredHashCount(last) {
			note(&TamperError{last, fmt.Sprintf("tree has %d stored hashes, want %d", treeSize, tlog.StoredHashCount(last))})
		} else if root, err := tlog.TreeHash(last, dbHashReader{ctx, q}); err != nil || root != fr.Root() {
			note(&TamperError{0, "stored Merkle tree does not match the entries"})
		} else if stored != nil {
			if why := headDiffers(stored, last, prev, &fr); why != "" {
				note(&TamperError{last, why})
			}
		}
	}
	return first, nil
}

// headDiffers says how a backend's stored head differs from the end of
// the entries: last, its hash and the tree's frontier; "" if it does not.
func headDiffers(h *Head, last int64, hash [32]byte, fr *Frontier) string {
	switch {
	case h.Seq != last:
		return fmt.Sprintf("the stored head is at seq %d, the entries end at %d", h.Seq, last)
	case h.Hash != hash:
		return "the stored head's hash is not the last entry's"
	case !slices.Equal(h.Frontier, fr.nodes):
		return "the stored head's tree frontier does not match the entries"
	}
	return ""
}

// SinceError reports an export asked to start after the end of the log:
// it would hold nothing but a checkpoint that no previous export can
// reach, so it is refused rather than written.
type SinceError struct {
	Since int64 // the seq asked for
	Last  int64 // the log's last seq
}

func (e *SinceError) Error() string {
	return fmt.Sprintf("audit: export --since %d: the log ends at seq %d", e.Since, e.Last)
}

// Export writes the entries after seq since, one JSON object a line as
// stored, then for each witness its newest cosigned checkpoint with a
// consistency proof ({"witnessed":"<note>","proof":[...]}), then a final
// line {"checkpoint":"<signed note>"} covering them.
// since may equal the last seq (the export then holds only the checkpoint,
// and proves with the previous export that nothing changed); beyond it
// Export fails with a *SinceError and writes nothing.
//
// A log that failed verification exports everything it holds with the
// latest stored checkpoint, unsigned by anything new, so an auditor sees
// the damage.
func (l *Log) Export(ctx context.Context, w io.Writer, since int64) error {
	if since < 0 {
		since = 0
	}
	var cpNote []byte
	var upto int64
	if l.broken == nil {
		msg, err := l.Checkpoint(ctx)
		if err != nil {
			return err
		}
		cpNote = msg
		upto, _ = CheckpointSize(msg)
		if since > upto {
			return &SinceError{Since: since, Last: upto}
		}
	} else {
		var size int64
		var msg string
		err := l.db.QueryRowContext(ctx, `SELECT size, note FROM audit_checkpoints ORDER BY size DESC, id DESC LIMIT 1`).Scan(&size, &msg)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("audit: export: %w", err)
		}
		cpNote = []byte(msg)
		upto = 1<<63 - 1
		last, err := l.LastSeq(ctx)
		if err != nil {
			return err
		}
		if since > last {
			return &SinceError{Since: since, Last: last}
		}
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	// Entries an archive holds are gone: the export starts after them,
	// and is verified with the archive as its previous export.
	pr, err := l.latestPruned(ctx, l.db)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	if err := writeEntries(ctx, l.db, bw, max(since, pr.through), upto); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	if l.broken == nil {
		// The witnesses' cosigned checkpoints, each with its proof that
		// the final checkpoint extends it (docs/audit-export.md).
		wlines, err := l.witnessedLines(ctx, upto)
		if err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		for _, wl := range wlines {
			bw.Write(wl)
			bw.WriteByte('\n')
		}
	}
	line, err := EncodeCheckpointLine(cpNote)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	bw.Write(line)
	bw.WriteByte('\n')
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// CheckpointSize reads the tree size of a checkpoint note without
// verifying it.
func CheckpointSize(msg []byte) (int64, bool) {
	lines := strings.SplitN(string(msg), "\n", 3)
	if len(lines) < 3 {
		return 0, false
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	return n, err == nil
}
