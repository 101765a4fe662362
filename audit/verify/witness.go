package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/torchwood"
	"github.com/countersign/countersign/audit"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// decodeWitnessedLine reads a witnessed line: the cosigned checkpoint
// and the proof, in the one form audit.EncodeWitnessedLine writes.
func decodeWitnessedLine(line []byte) ([]byte, tlog.TreeProof, error) {
	var wl struct {
		Witnessed string   `json:"witnessed"`
		Proof     []string `json:"proof"`
	}
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
	if again, err := audit.EncodeWitnessedLine([]byte(wl.Witnessed), proof); err != nil || !bytes.Equal(again, line) {
		return nil, nil, errors.New("witnessed line is not in canonical form")
	}
	return []byte(wl.Witnessed), proof, nil
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
	cp  *audit.Checkpoint
	msg []byte
}

// checkWitnessed checks the export's cosignatures against the trusted
// witnesses: every cosignature by a trusted key must verify, and the
// quorum must have cosigned some checkpoint the export extends.
//
// A previous checkpoint the export extends counts as witnessed by those
// who cosigned it (prevSigners; cosigned by the quorum, or refused
// before).
func (st *verified) checkWitnessed(p *witnessPolicy, prev *audit.Checkpoint, prevSigners []string) error {
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
			return &Error{w.cp.Size, "witnessed checkpoint: " + err.Error()}
		}
		for _, n := range names {
			sizes[n] = max(sizes[n], w.cp.Size)
		}
	}
	size, ok := p.witnessedSize(sizes)
	if !ok {
		return &Error{st.cp.Size, fmt.Sprintf("the export carries checkpoints cosigned by %d of the %d trusted witnesses, %d required",
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

// readPrevious reads a bare checkpoint given as the previous state of
// the log (audit verify --previous FILE); previousCheckpoint checks it
// once the export's chain of keys is known.
func readPrevious(r io.Reader) ([]byte, error) {
	msg, err := io.ReadAll(io.LimitReader(r, MaxLine+1))
	if err != nil {
		return nil, fmt.Errorf("previous checkpoint: %w", err)
	}
	if len(msg) > MaxLine {
		return nil, errors.New("previous checkpoint: longer than a checkpoint can be")
	}
	return msg, nil
}

// previousCheckpoint checks a bare previous checkpoint: signed by the
// server key in force at its size (the export's chain of keys: one kept
// from before a rotation is the old key's, one after it the new key's)
// and, when the auditor trusts witnesses, cosigned by their quorum.
func previousCheckpoint(msg []byte, keys *keyChain, p *witnessPolicy) (*audit.Checkpoint, []string, error) {
	cp, err := openCheckpoint(msg, keys.all())
	if err == nil {
		cp, err = openCheckpoint(msg, keys.verifiersAt(cp.Size))
	}
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
func (st *verified) extends(cp *audit.Checkpoint) error {
	if cp.Size > st.cp.Size {
		return &Error{st.cp.Size + 1, fmt.Sprintf("missing: the previous checkpoint covers %d entries, this export ends at seq %d", cp.Size, st.cp.Size)}
	}
	if cp.Size == 0 {
		return nil
	}
	proof, err := tlog.ProveTree(st.cp.Size, cp.Size, st.tree)
	if err == nil {
		err = tlog.CheckTree(proof, st.cp.Size, st.cp.Root, cp.Size, cp.Root)
	}
	if err != nil {
		return &Error{cp.Size, "the previous checkpoint is not a prefix of this one: " + err.Error()}
	}
	return nil
}

// memTree keeps every stored hash of a tree in memory, for proofs.
type memTree []tlog.Hash

func (m *memTree) add(n int64, leaf tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(n, leaf, m)
	if err != nil {
		return err
	}
	*m = append(*m, hs...)
	return nil
}

func (m *memTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(*m)) {
			return nil, fmt.Errorf("audit: tree hash %d not stored", x)
		}
		out[i] = (*m)[x]
	}
	return out, nil
}
