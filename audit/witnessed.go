package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

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
	snap, err := l.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
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
	cp, err := openCheckpoint(cosigned, l.verifier)
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
		cp, err := openCheckpoint([]byte(msg), l.verifier)
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

func encodeWitnessedLine(msg []byte, proof tlog.TreeProof) ([]byte, error) {
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

func decodeWitnessedLine(line []byte) ([]byte, tlog.TreeProof, error) {
	var wl witnessedLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wl); err != nil {
		return nil, nil, fmt.Errorf("witnessed line: %v", err)
	}
	var proof tlog.TreeProof
	for _, s := range wl.Proof {
		h, err := tlog.ParseHash(s)
		if err != nil {
			return nil, nil, fmt.Errorf("witnessed line: bad proof hash %q", s)
		}
		proof = append(proof, h)
	}
	if again, err := encodeWitnessedLine([]byte(wl.Witnessed), proof); err != nil || !bytes.Equal(again, line) {
		return nil, nil, errors.New("witnessed line is not in canonical form")
	}
	return []byte(wl.Witnessed), proof, nil
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
		line, err := encodeWitnessedLine(w.Note, proof)
		if err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	return lines, nil
}

// witnessPolicy is what the auditor trusts of witnesses: their keys and
// how many must have cosigned.
type witnessPolicy struct {
	keys   []*torchwood.CosignatureVerifier
	quorum int
}

func newWitnessPolicy(keys []string, quorum int) (*witnessPolicy, error) {
	if len(keys) == 0 {
		if quorum > 0 {
			return nil, errors.New("audit: a witness quorum without witness keys")
		}
		return nil, nil
	}
	p := &witnessPolicy{quorum: quorum}
	for _, k := range keys {
		v, err := torchwood.NewCosignatureVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("audit: witness key %q: %w (want a tlog-cosignature vkey, name+hash+base64)", k, err)
		}
		if slices.ContainsFunc(p.keys, func(o *torchwood.CosignatureVerifier) bool { return o.String() == v.String() }) {
			return nil, fmt.Errorf("audit: witness key %s given twice", v.Name())
		}
		p.keys = append(p.keys, v)
	}
	if p.quorum == 0 {
		p.quorum = len(p.keys)
	}
	if p.quorum < 0 || p.quorum > len(p.keys) {
		return nil, fmt.Errorf("audit: witness quorum %d with %d witness keys", quorum, len(p.keys))
	}
	return p, nil
}

// cosigners returns the names of the trusted witnesses whose cosignatures
// on msg verify. A cosignature by a trusted key that does not verify is an
// error: someone altered the note or forged the line.
func (p *witnessPolicy) cosigners(msg []byte) ([]string, error) {
	var vs []note.Verifier
	for _, k := range p.keys {
		vs = append(vs, k)
	}
	n, err := note.Open(msg, note.VerifierList(vs...))
	var unverified *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unverified):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("cosignature: %v", err)
	}
	var names []string
	for _, s := range n.Sigs {
		names = append(names, s.Name)
	}
	return names, nil
}

// witnessedSize is the largest tree size that at least quorum of the
// trusted witnesses cosigned: each cosigned tree is a prefix of the final
// one, so the quorum-th largest of their sizes is a tree all of them saw.
func (p *witnessPolicy) witnessedSize(sizes map[string]int64) (int64, bool) {
	if len(sizes) < p.quorum {
		return 0, false
	}
	all := make([]int64, 0, len(sizes))
	for _, s := range sizes {
		all = append(all, s)
	}
	slices.Sort(all)
	slices.Reverse(all)
	return all[p.quorum-1], true
}

// witnessedCP is a verified cosigned checkpoint of an export.
type witnessedCP struct {
	cp  *checkpoint
	msg []byte
}

// checkWitnessed checks the export's cosignatures against the trusted
// witnesses: every cosignature by a trusted key must verify, and the
// quorum must have cosigned some checkpoint the export extends.
//
// A previous checkpoint the export extends counts as witnessed by those
// who cosigned it (prevSigners; cosigned by the quorum, or refused
// before).
func (st *verified) checkWitnessed(p *witnessPolicy, prev *checkpoint, prevSigners []string) error {
	if p == nil {
		return nil
	}
	sizes := map[string]int64{}
	for _, n := range prevSigners {
		sizes[n] = prev.Size
	}
	for _, w := range st.witnessed {
		names, err := p.cosigners(w.msg)
		if err != nil {
			return &VerifyError{w.cp.Size, "witnessed checkpoint: " + err.Error()}
		}
		for _, n := range names {
			sizes[n] = max(sizes[n], w.cp.Size)
		}
	}
	size, ok := p.witnessedSize(sizes)
	if !ok {
		return &VerifyError{st.cp.Size, fmt.Sprintf("the export carries checkpoints cosigned by %d of the %d trusted witnesses, %d required",
			len(sizes), len(p.keys), p.quorum)}
	}
	st.witnessedSize = size
	st.cosigners = []string{}
	for n, s := range sizes {
		if s >= size {
			st.cosigners = append(st.cosigners, n)
		}
	}
	slices.Sort(st.cosigners)
	return nil
}

// previousCheckpoint reads a bare checkpoint given as the previous state
// of the log (audit verify --previous FILE): signed by the server and, when
// the auditor trusts witnesses, cosigned by their quorum.
func previousCheckpoint(r io.Reader, v note.Verifier, p *witnessPolicy) (*checkpoint, []string, error) {
	msg, err := io.ReadAll(io.LimitReader(r, MaxLine+1))
	if err != nil {
		return nil, nil, fmt.Errorf("previous checkpoint: %w", err)
	}
	if len(msg) > MaxLine {
		return nil, nil, errors.New("previous checkpoint: longer than a checkpoint can be")
	}
	cp, err := openCheckpoint(msg, v)
	if err != nil {
		return nil, nil, fmt.Errorf("previous %w", err)
	}
	if p == nil {
		return cp, nil, nil
	}
	names, err := p.cosigners(msg)
	if err != nil {
		return nil, nil, fmt.Errorf("previous checkpoint: %w", err)
	}
	if len(names) < p.quorum {
		return nil, nil, fmt.Errorf("previous checkpoint (size %d): cosigned by %d of the %d trusted witnesses, %d required", cp.Size, len(names), len(p.keys), p.quorum)
	}
	return cp, names, nil
}

// extends proves the export's tree extends the checkpoint cp. The export
// must start at seq 1 (verifyStream refuses a later start without a
// previous export), so its whole tree is at hand.
func (st *verified) extends(cp *checkpoint) error {
	if cp.Size > st.cp.Size {
		return &VerifyError{st.cp.Size + 1, fmt.Sprintf("missing: the previous checkpoint covers %d entries, this export ends at seq %d", cp.Size, st.cp.Size)}
	}
	if cp.Size == 0 {
		return nil
	}
	proof, err := tlog.ProveTree(st.cp.Size, cp.Size, st.tree)
	if err == nil {
		err = tlog.CheckTree(proof, st.cp.Size, st.cp.Root, cp.Size, cp.Root)
	}
	if err != nil {
		return &VerifyError{cp.Size, "the previous checkpoint is not a prefix of this one: " + err.Error()}
	}
	return nil
}
