package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A witnessed checkpoint is one of the server's signed checkpoints with a
// C2SP tlog-cosignature appended by a witness (package witness sends them):
// the witness checked that the tree extends every tree it saw before, and
// signed. The log keeps the newest one per witness in audit_witnessed, so
// that exports carry them and the newest survives a restart.

// Witnessed is a stored cosigned checkpoint.
type Witnessed struct {
	Witness string // the witness's key (vkey), as configured
	Size    int64
	Root    tlog.Hash
	Note    []byte // the server's signed note with the witness's cosignature lines
}

// ConsistencyProof proves that the log's tree of size m is a prefix of its
// tree of size n (RFC 6962 consistency proof), read from the stored tree.
func (l *Log) ConsistencyProof(ctx context.Context, m, n int64) (tlog.TreeProof, error) {
	snap, _, err := l.backend.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	defer snap.Rollback()
	h, err := readHead(ctx, snap)
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	if m < 0 || m > n || n > h.seq {
		return nil, fmt.Errorf("audit: consistency proof from %d to %d: the log holds %d", m, n, h.seq)
	}
	proof, err := tlog.ProveTree(n, m, dbHashReader{ctx, snap})
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	return proof, nil
}

// StoreWitnessed keeps a cosigned checkpoint of witness (its vkey). The
// note must carry the server's signature over a tree this log holds, and a
// valid cosignature by that witness: what is stored is proof, never a
// claim.
func (l *Log) StoreWitnessed(ctx context.Context, witness string, cosigned []byte) error {
	cp, err := openCheckpoint(cosigned, l.trusted())
	if err != nil {
		return fmt.Errorf("audit: witnessed checkpoint: %w", err)
	}
	wv, err := torchwood.NewCosignatureVerifier(witness)
	if err != nil {
		return fmt.Errorf("audit: witness key %q: %w", witness, err)
	}
	if _, err := note.Open(cosigned, note.VerifierList(wv)); err != nil {
		return fmt.Errorf("audit: witnessed checkpoint: no valid cosignature of %s: %w", wv.Name(), err)
	}
	root, err := l.TreeHash(ctx, cp.Size)
	if err != nil {
		return err
	}
	if root != cp.Root {
		return fmt.Errorf("audit: witnessed checkpoint of size %d does not match this log's tree", cp.Size)
	}
	if _, err := l.db.ExecContext(ctx, `INSERT INTO audit_witnessed (witness, size, note, created) VALUES (?, ?, ?, ?)`,
		witness, cp.Size, string(cosigned), l.now().UTC().Format(TimeFormat)); err != nil {
		return fmt.Errorf("audit: witnessed checkpoint: %w", err)
	}
	return nil
}

// LatestWitnessed returns the largest stored cosigned checkpoint of each
// witness, ordered by witness key. Rows that do not verify with the server
// key are refused with a *TamperError.
func (l *Log) LatestWitnessed(ctx context.Context) ([]Witnessed, error) {
	return l.latestWitnessed(ctx, l.db)
}

func (l *Log) latestWitnessed(ctx context.Context, q querier) ([]Witnessed, error) {
	rows, err := q.QueryContext(ctx, `SELECT w.witness, w.size, w.note FROM audit_witnessed w
		WHERE w.id = (SELECT id FROM audit_witnessed v WHERE v.witness = w.witness ORDER BY size DESC, id DESC LIMIT 1)
		ORDER BY w.witness`)
	if err != nil {
		return nil, fmt.Errorf("audit: read witnessed checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Witnessed
	for rows.Next() {
		var w Witnessed
		var msg string
		if err := rows.Scan(&w.Witness, &w.Size, &msg); err != nil {
			return nil, fmt.Errorf("audit: read witnessed checkpoints: %w", err)
		}
		cp, err := openCheckpoint([]byte(msg), l.trusted())
		if err != nil {
			return nil, &TamperError{w.Size, "witnessed checkpoint: " + err.Error()}
		}
		if cp.Size != w.Size {
			return nil, &TamperError{w.Size, fmt.Sprintf("witnessed checkpoint row says size %d, its note says %d", w.Size, cp.Size)}
		}
		w.Root, w.Note = cp.Root, []byte(msg)
		out = append(out, w)
	}
	return out, rows.Err()
}

// witnessedLine is an export line carrying a cosigned checkpoint and the
// consistency proof from its tree to the export's final checkpoint.
type witnessedLine struct {
	Witnessed string   `json:"witnessed"`
	Proof     []string `json:"proof"`
}

// EncodeWitnessedLine is an export's line of a witness's cosigned
// checkpoint msg with the consistency proof from its tree to the
// export's, in the one form an export holds it.
func EncodeWitnessedLine(msg []byte, proof tlog.TreeProof) ([]byte, error) {
	wl := witnessedLine{Witnessed: string(msg), Proof: []string{}}
	for _, h := range proof {
		wl.Proof = append(wl.Proof, h.String())
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(wl); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// witnessedLines returns the export lines of the newest cosigned
// checkpoint of each witness that the export's final checkpoint (size n)
// covers; empty trees prove nothing and are left out.
func (l *Log) witnessedLines(ctx context.Context, n int64) ([][]byte, error) {
	ws, err := l.LatestWitnessed(ctx)
	if err != nil {
		return nil, err
	}
	var lines [][]byte
	for _, w := range ws {
		if w.Size == 0 || w.Size > n {
			continue
		}
		proof, err := l.ConsistencyProof(ctx, w.Size, n)
		if err != nil {
			return nil, err
		}
		line, err := EncodeWitnessedLine(w.Note, proof)
		if err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	return lines, nil
}
