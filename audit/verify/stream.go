package verify

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// stream checks one export's lines in order: each line on its own
// (audit.CheckLines, on every core), then its place in the chain, the
// rules replayed over the entries so far (logState), and at the end the
// checkpoint, the witnessed lines and the proof that a previous export is
// a prefix.
type stream struct {
	br      *bufio.Reader
	allSigs bool
	lineNo  int
	cpLine  []byte   // the final checkpoint line, once read
	wLines  [][]byte // the witnessed lines before it

	prev  *verified // the previous export, or nil
	keep  bool      // keep the entry hashes, for a later export
	st    *verified // what this export proved so far
	state *logState
	want  int64    // the seq the next entry must have
	prevH [32]byte // the hash the next entry must link to
	fr    audit.Frontier
	tree  *memTree // every stored hash, when a proof against a previous tree is due
}

func verifyStream(r io.Reader, pub ed25519.PublicKey, v note.Verifier, prev *verified, keep bool, opts Options) (*verified, error) {
	s := newStream(r, prev, keep, opts)
	s.state.keys.start(pub)
	if prev != nil {
		// An export that starts later (export --since) is signed from
		// its first entry by the key in force there.
		if n := firstSeq(s.br); n > 1 {
			pub = s.state.keys.at(n)
		}
	}
	if err := audit.CheckLines(s.next, pub, s.entry); err != nil {
		var ve *Error
		if errors.As(err, &ve) {
			return nil, ve
		}
		return nil, &Error{s.want, "reading line " + fmt.Sprint(s.lineNo+1) + ": " + err.Error()}
	}
	last := s.want - 1
	v = s.state.keys.verifier() // the key in force after the last rotation
	cp, err := s.checkpoint(v)
	if err != nil {
		return nil, err
	}
	if s.st.entries == 0 && prev != nil && cp.Size > 0 {
		if last, err = s.repeatsPrevious(cp); err != nil {
			return nil, err
		}
	}
	if err := s.covers(cp, last); err != nil {
		return nil, err
	}
	s.st.cp = cp
	if err := s.witnessed(v, cp, last); err != nil {
		return nil, err
	}
	if prev != nil {
		if err := s.extendsPrevious(cp, last); err != nil {
			return nil, err
		}
	}
	return s.st, nil
}

func newStream(r io.Reader, prev *verified, keep bool, opts Options) *stream {
	s := &stream{
		br:      bufio.NewReaderSize(r, 1<<16),
		allSigs: opts.AllSignatures,
		prev:    prev,
		keep:    keep,
		st:      &verified{},
		want:    1,
		state:   &logState{creds: credentials{}, req: newRequirements()},
	}
	if prev != nil {
		// The previous export's entries were replayed when it was
		// verified; this one's entries up to prev.last must equal them,
		// so replay goes on from there.
		s.state = prev.state
	}
	s.state.replayer = opts.ReplayPolicy
	s.state.roots = opts.AttestationRoots
	s.st.state = s.state
	if prev != nil || opts.anchored {
		// A previous export or bare checkpoint is proven a prefix by a
		// consistency proof over the whole tree.
		s.tree = &memTree{}
	}
	s.st.tree = s.tree
	return s
}

// next reads the next entry line; it keeps the witnessed lines and stops
// at the checkpoint line.
func (s *stream) next() (audit.Line, bool, error) {
	for {
		line, err := readLine(s.br)
		if err == io.EOF {
			return audit.Line{}, false, nil
		}
		if err != nil {
			return audit.Line{}, false, err
		}
		s.lineNo++
		if bytes.HasPrefix(line, []byte(`{"checkpoint"`)) {
			s.cpLine = line
			return audit.Line{}, false, nil
		}
		if bytes.HasPrefix(line, []byte(`{"witnessed"`)) {
			s.wLines = append(s.wLines, line)
			continue
		}
		if s.wLines != nil {
			return audit.Line{}, false, errors.New("an entry after a witnessed line: witnessed lines come after the last entry")
		}
		return audit.Line{Bytes: line, CheckSig: s.allSigs}, true, nil
	}
}

// entry takes the next checked line in order: its seq, its link to the
// one before, its agreement with the previous export, and the rules of
// the log so far.
func (s *stream) entry(r *audit.Checked) error {
	if s.st.entries == 0 {
		if r.Parsed {
			if err := s.startAt(r.Seq); err != nil {
				return err
			}
		}
		s.st.first = s.want
	}
	if r.Parsed && r.Seq != s.want {
		if r.Seq > s.want {
			return &Error{s.want, fmt.Sprintf("missing: the next entry is seq %d", r.Seq)}
		}
		return &Error{s.want, fmt.Sprintf("out of order: found seq %d", r.Seq)}
	}
	if r.Problem != "" {
		return &Error{s.want, r.Problem}
	}
	if r.Prev != s.prevH {
		return &Error{r.Seq, "prev_hash does not match the hash of the entry before"}
	}
	prev := s.prev
	if prev != nil && r.Seq <= prev.last && prev.hashes[r.Seq-1] != r.Hash {
		return &Error{r.Seq, "differs from the same entry in the previous export"}
	}
	if prev == nil || r.Seq > prev.last {
		if r.Entry.Kind == vocab.KindKeyRotated {
			if reason := s.state.keys.rotate(r.Entry); reason != "" {
				return &Error{r.Seq, reason}
			}
		}
		if reason := s.state.apply(r.Entry); reason != "" {
			return &Error{r.Seq, reason}
		}
		if reason := s.prunedRule(r.Entry); reason != "" {
			return &Error{r.Seq, reason}
		}
	}
	if isAssertionKind(r.Entry.Kind) {
		s.st.assertions++
	}
	if r.SigChecked {
		s.st.signatures++
	}
	leaf := audit.LeafHash(r.Hash)
	s.fr.Add(leaf)
	if s.tree != nil {
		if err := s.tree.add(r.Seq-1, leaf); err != nil {
			return &Error{r.Seq, err.Error()}
		}
	}
	if s.keep {
		s.st.hashes = append(s.st.hashes, r.Hash)
	}
	s.prevH = r.Hash
	s.st.entries++
	s.st.last = r.Seq
	s.want++
	return nil
}

// startAt places an export that starts after seq 1 on the previous
// export's tree.
func (s *stream) startAt(seq int64) error {
	if seq <= 1 {
		return nil
	}
	prev := s.prev
	if prev == nil {
		return &Error{seq, fmt.Sprintf("export starts at seq %d: verify it with a previous export that reaches seq %d", seq, seq-1)}
	}
	if prev.last < seq-1 {
		return &Error{prev.last + 1, fmt.Sprintf("missing: the previous export ends at seq %d, this one starts at %d", prev.last, seq)}
	}
	s.want = seq
	s.prevH = prev.hashes[seq-2]
	for i, h := range prev.hashes[:seq-1] {
		s.fr.Add(audit.LeafHash(h))
		if err := s.tree.add(int64(i), audit.LeafHash(h)); err != nil {
			return &Error{int64(i + 1), err.Error()}
		}
	}
	return nil
}

// checkpoint reads the final checkpoint line, which nothing may follow,
// and checks its signature.
func (s *stream) checkpoint(v note.Verifier) (*audit.Checkpoint, error) {
	last := s.want - 1
	if s.cpLine == nil {
		return nil, &Error{last + 1, "missing: the export does not end with a checkpoint line"}
	}
	if line, err := readLine(s.br); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%.40q", line)
		}
		return nil, &Error{last + 1, "data after the checkpoint line: " + err.Error()}
	}
	msg, err := decodeCheckpointLine(s.cpLine)
	if err != nil {
		return nil, &Error{last, err.Error()}
	}
	cp, err := audit.OpenCheckpoint(msg, v)
	if err != nil {
		return nil, &Error{last, err.Error()}
	}
	return cp, nil
}

// repeatsPrevious checks the checkpoint of an export with no entries
// (export --since the last seq) against the previous export's leaves. It
// proves the server signed the same tree again and nothing more.
func (s *stream) repeatsPrevious(cp *audit.Checkpoint) (int64, error) {
	prev := s.prev
	if cp.Size > prev.last {
		return 0, &Error{prev.last + 1, fmt.Sprintf("missing: the export holds no entries, its checkpoint covers %d, the previous export ends at seq %d", cp.Size, prev.last)}
	}
	var pfr audit.Frontier
	for _, h := range prev.hashes[:cp.Size] {
		pfr.Add(audit.LeafHash(h))
	}
	s.fr = pfr
	s.st.empty = true
	return cp.Size, nil
}

// covers checks that the checkpoint covers exactly the entries, last
// being the last seq, and that its root is theirs.
func (s *stream) covers(cp *audit.Checkpoint, last int64) error {
	switch {
	case cp.Size < last:
		return &Error{cp.Size + 1, fmt.Sprintf("not covered by the checkpoint (size %d)", cp.Size)}
	case cp.Size > last:
		return &Error{last + 1, fmt.Sprintf("missing: the checkpoint covers %d entries, the export ends at seq %d", cp.Size, last)}
	case cp.Root != s.fr.Root():
		return &Error{last, "the checkpoint's root hash is not the Merkle root of the entries"}
	}
	return nil
}

// witnessed checks each witnessed line: a checkpoint the server signed,
// proven a prefix of the final one. Cosignatures are checked later,
// against the trusted witnesses (checkWitnessed).
func (s *stream) witnessed(v note.Verifier, cp *audit.Checkpoint, last int64) error {
	for _, line := range s.wLines {
		msg, proof, err := decodeWitnessedLine(line)
		if err != nil {
			return &Error{last, err.Error()}
		}
		wcp, err := audit.OpenCheckpoint(msg, v)
		if err != nil {
			return &Error{last, "witnessed " + err.Error()}
		}
		if wcp.Size > cp.Size {
			return &Error{cp.Size + 1, fmt.Sprintf("missing: a witnessed checkpoint covers %d entries, the export's checkpoint %d", wcp.Size, cp.Size)}
		}
		if err := tlog.CheckTree(proof, cp.Size, cp.Root, wcp.Size, wcp.Root); err != nil {
			return &Error{wcp.Size, "the witnessed checkpoint of size " + fmt.Sprint(wcp.Size) + " is not a prefix of the export's checkpoint: " + err.Error()}
		}
		s.st.witnessed = append(s.st.witnessed, witnessedCP{wcp, msg})
	}
	return nil
}

// extendsPrevious proves the previous export's checkpoint a prefix of
// this one.
func (s *stream) extendsPrevious(cp *audit.Checkpoint, last int64) error {
	prev := s.prev
	if last < prev.last {
		return &Error{last + 1, fmt.Sprintf("missing: the previous export reaches seq %d, this one ends at %d", prev.last, last)}
	}
	if s.st.empty || prev.cp.Size == 0 {
		// Empty: same size as the previous tree (covers checked it), the
		// root recomputed from the previous export's own leaves. And an
		// empty tree is a prefix of every tree.
		return nil
	}
	proof, err := tlog.ProveTree(cp.Size, prev.cp.Size, s.tree)
	if err == nil {
		err = tlog.CheckTree(proof, cp.Size, cp.Root, prev.cp.Size, prev.cp.Root)
	}
	if err != nil {
		return &Error{prev.cp.Size, "the previous checkpoint is not a prefix of this one: " + err.Error()}
	}
	return nil
}

// MaxLine bounds one line of an export.
const MaxLine = 16 << 20

// readLine returns the next line without its newline, io.EOF at the end,
// and refuses lines over MaxLine. A last line without a newline is
// accepted.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > MaxLine {
			return nil, fmt.Errorf("line longer than %d bytes", MaxLine)
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		case err != nil:
			return nil, err
		}
		return line[:len(line)-1], nil
	}
}

// decodeCheckpointLine reads the final line, in the one form
// audit.EncodeCheckpointLine writes.
func decodeCheckpointLine(line []byte) ([]byte, error) {
	var c struct {
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal(line, &c); err != nil {
		return nil, fmt.Errorf("checkpoint line: %v", err)
	}
	if again, err := audit.EncodeCheckpointLine([]byte(c.Checkpoint)); err != nil || !bytes.Equal(again, line) {
		return nil, errors.New("checkpoint line is not in canonical form")
	}
	return []byte(c.Checkpoint), nil
}
