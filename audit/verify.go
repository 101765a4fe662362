package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/gowebpki/jcs"
	fastjson "github.com/segmentio/encoding/json"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/attest"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// VerifyError is the first problem Verify found: the seq of the first bad
// entry and why. Problems with the checkpoint name the seq it should cover.
type VerifyError struct {
	Seq    int64
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: verification failed at seq %d: %s", e.Seq, e.Reason)
}

// Summary describes a verified export.
type Summary struct {
	Entries    int64  // entry lines in the export
	FirstSeq   int64  // 0 when there are none
	LastSeq    int64  // 0 when there are none
	TreeSize   int64  // the checkpoint's tree size (= LastSeq)
	Root       string // the checkpoint's root hash, standard base64
	Assertions int    // WebAuthn assertions checked
	Approvals  int    // approval.approved entries whose quorum of assertions was checked
	Executions int    // countersigned executions matched to their approval
	GrantCalls int    // calls let through by a standing grant, checked against it
	Format1    int64  // entries in format 1, which record no requirements to check
	Replayed   int    // decisions replayed against their policy (VerifyOptions.ReplayPolicy)
	Unreplayed int    // decisions that name no policy, so could not be replayed
	Signatures int64  // entry signatures checked one by one (VerifyOptions.AllSignatures)
	Attested   int    // enrolled keys whose attestation chains to a trusted root (VerifyOptions.AttestationRoots)
	Extends    int64  // tree size of the previous export proven to be a prefix; 0 without one
	NothingNew bool   // no entries: only that the checkpoint matches the previous export is proven

	// WitnessedLines counts the export's cosigned checkpoints (each
	// server-signed and proven a prefix of the final checkpoint).
	WitnessedLines int
	// Witnessed is the largest tree size cosigned by the quorum of the
	// trusted witnesses (VerifyOptions.WitnessKeys), and Cosigners their
	// names; 0 and nil without witness keys.
	Witnessed int64
	Cosigners []string
	// PreviousWitnessed: the previous was a bare (cosigned) checkpoint,
	// not an export.
	PreviousWitnessed bool
}

func (s Summary) String() string {
	if s.NothingNew {
		return fmt.Sprintf("OK: no entries after seq %d; the checkpoint (size %d, root %s) is consistent with the previous export (size %d). "+
			"Nothing new is proven: this export only shows that the server signed the same log again", s.TreeSize, s.TreeSize, s.Root, s.Extends)
	}
	out := fmt.Sprintf("OK: %d entries (seq %d..%d), %d key assertions verified, %d approvals met their quorum, %d countersigned executions matched their approval, checkpoint size %d root %s",
		s.Entries, s.FirstSeq, s.LastSeq, s.Assertions, s.Approvals, s.Executions, s.TreeSize, s.Root)
	if s.GrantCalls > 0 {
		out += fmt.Sprintf(", %d calls let through by standing grants checked against their grant", s.GrantCalls)
	}
	if s.Attested > 0 {
		out += fmt.Sprintf(", %d enrolled keys attested by a trusted root", s.Attested)
	}
	if s.Replayed > 0 || s.Unreplayed > 0 {
		out += fmt.Sprintf(", %d decisions replayed against their policy", s.Replayed)
		if s.Unreplayed > 0 {
			out += fmt.Sprintf(" (%d name no policy and were not replayed)", s.Unreplayed)
		}
	}
	if s.Format1 > 0 {
		out += fmt.Sprintf(", %d entries in format 1 (no recorded requirements: their approvals are not checked against one)", s.Format1)
	}
	if s.Signatures > 0 {
		out += fmt.Sprintf(", %d entry signatures verified", s.Signatures)
	} else if s.Entries > 0 {
		out += ", entries authenticated by the signed checkpoint"
	}
	if s.Extends > 0 {
		if s.PreviousWitnessed {
			out += fmt.Sprintf(", consistent with the previous checkpoint (size %d)", s.Extends)
		} else {
			out += fmt.Sprintf(", consistent with the previous export (size %d)", s.Extends)
		}
	}
	switch {
	case s.Cosigners != nil:
		out += fmt.Sprintf(", tree size %d witnessed by %s", s.Witnessed, strings.Join(s.Cosigners, ", "))
	case s.WitnessedLines > 0:
		out += fmt.Sprintf(", %d witnessed checkpoints whose cosignatures were not checked (no --witness-key)", s.WitnessedLines)
	}
	return out
}

// VerifyOptions tune [Verify]. The zero value checks a complete export.
type VerifyOptions struct {
	// Previous is an older export of the same log that this one must
	// extend; it is verified too, with the same options.
	Previous io.Reader

	// AllSignatures checks every entry's own sig as well. It adds nothing
	// to what a complete export proves (see [Verify]) and costs one
	// Ed25519 verification per entry; use it to show that every entry
	// was signed as written, e.g. before quoting single entries.
	AllSignatures bool

	// ReplayPolicy, if set, checks every decision that named a loaded
	// policy (call.allowed, call.executed, call.failed,
	// approval.requested) against that policy.
	ReplayPolicy PolicyReplayer

	// AttestationRoots, if set, requires every enrolled key to carry an
	// attestation that verifies and chains to one of these roots (package
	// attest), as of its enrollment.
	AttestationRoots *x509.CertPool

	// WitnessKeys are the C2SP tlog-cosignature keys (vkeys) of the
	// witnesses the auditor trusts. With them, the export must carry a
	// checkpoint cosigned by WitnessQuorum of them (0: all), and a
	// Previous that is a bare checkpoint must be cosigned so too.
	WitnessKeys   []string
	WitnessQuorum int

	anchored bool // Previous is a bare checkpoint: keep the tree for a proof
}

// MaxLine bounds one line of an export.
const MaxLine = 16 << 20

// Verify checks an export offline against the server's public key (in the
// [PublicKeyText] form): every entry's canonical form, hash, link and seq,
// every approver's WebAuthn assertion, and that the final checkpoint is
// signed by the server key and its root is the Merkle root of all entries.
//
// Entries are authenticated through the checkpoint, not one by one: each
// entry's hash is recomputed from its content and its predecessor's hash,
// each hash is a leaf of the Merkle tree, and the checkpoint's signature
// covers the tree's root. Altering any entry changes its hash, every later
// prev_hash and the root, so the checkpoint's signature would no longer
// verify; a verified checkpoint thus proves every entry the server key
// signed it over, exactly as every entry's own sig would, since the same
// key makes both. The entries' own signatures are therefore checked only
// with [VerifyOptions.AllSignatures]; their form (64 bytes, base64url) is
// always checked.
//
// A signature, of an entry or of the checkpoint, is valid exactly when
// crypto/ed25519's Verify accepts it; there is no second rule.
//
// With opts.Previous (an older export) it also proves that export is a
// prefix of this one: identical entries where they overlap and a tlog
// consistency proof between the two checkpoints. An export that does not
// start at seq 1 (export --since) can only be verified with a previous
// export that reaches the seq before its first.
//
// Failures are *VerifyError.
func Verify(export io.Reader, publicKey string, opts VerifyOptions) (Summary, error) {
	pub, v, err := ParsePublicKey(publicKey)
	if err != nil {
		return Summary{}, err
	}
	wp, err := newWitnessPolicy(opts.WitnessKeys, opts.WitnessQuorum)
	if err != nil {
		return Summary{}, err
	}
	var prev *verified
	var anchor *checkpoint
	var anchorSigners []string
	if opts.Previous != nil {
		pr := bufio.NewReaderSize(opts.Previous, 1<<16)
		if first, err := pr.Peek(1); err == nil && first[0] != '{' {
			// A bare checkpoint, such as a witness's cosigned one.
			if anchor, anchorSigners, err = previousCheckpoint(pr, v, wp); err != nil {
				return Summary{}, err
			}
			opts.anchored = true
		}
		opts.Previous = pr
	}
	if opts.Previous != nil && anchor == nil {
		prev, err = verifyStream(opts.Previous, pub, v, nil, true, opts)
		if err != nil {
			var ve *VerifyError
			if errors.As(err, &ve) {
				return Summary{}, &VerifyError{ve.Seq, "previous export: " + ve.Reason}
			}
			return Summary{}, fmt.Errorf("previous export: %w", err)
		}
	}
	st, err := verifyStream(export, pub, v, prev, false, opts)
	if err != nil {
		return Summary{}, err
	}
	if anchor != nil {
		if err := st.extends(anchor); err != nil {
			return Summary{}, err
		}
	}
	if err := st.checkWitnessed(wp, anchor, anchorSigners); err != nil {
		return Summary{}, err
	}
	s := Summary{
		Entries: st.entries, FirstSeq: st.first, LastSeq: st.last,
		TreeSize: st.cp.Size, Root: base64.StdEncoding.EncodeToString(st.cp.Root[:]),
		Assertions: st.assertions, Signatures: st.signatures,
		Approvals: st.state.req.approvals, Executions: st.state.req.executions, Format1: st.state.format1,
		GrantCalls: st.state.req.grants.calls,
		Replayed:   st.state.replayed, Unreplayed: st.state.unreplayed, Attested: st.state.attested,
	}
	if prev != nil {
		s.Extends = prev.cp.Size
		s.NothingNew = st.empty
	}
	if anchor != nil {
		s.Extends, s.PreviousWitnessed = anchor.Size, true
	}
	s.WitnessedLines = len(st.witnessed)
	if wp != nil {
		s.Witnessed, s.Cosigners = st.witnessedSize, st.cosigners
	}
	return s, nil
}

// verified is what one export proved.
type verified struct {
	cp         *checkpoint
	entries    int64
	first      int64
	last       int64
	assertions int
	signatures int64
	empty      bool       // no entries: the checkpoint repeats the previous export's tree
	hashes     [][32]byte // entry hashes by seq-1, kept for a previous export
	state      *logState  // what the entries so far established, for a later export

	tree          *memTree      // every stored hash, when a proof against a previous tree is due
	witnessed     []witnessedCP // the export's cosigned checkpoints
	witnessedSize int64
	cosigners     []string
}

// logState is what replaying the entries in order has established: the
// enrolled credentials, the approval requests, the policies loaded and
// where format 2 began.
type logState struct {
	creds   credentials
	req     *requirements
	format2 int64 // seq of the first format 2 (or later) entry; 0 before one
	format  int   // the newest format seen
	format1 int64 // format 1 entries seen

	policies    map[string]*Entry // policy.loaded entries by policy_sha256
	firstPolicy int64             // seq of the first policy.loaded
	replayer    PolicyReplayer    // nil: decisions are not replayed
	roots       *x509.CertPool    // nil: enrollments' attestations are not checked
	attested    int               // enrollments whose attestation was checked
	replayed    int
	unreplayed  int // decisions without a policy to replay them against
}

// PolicyReplayer checks a decision entry against the policy document its
// policy_sha256 names (VerifyOptions.ReplayPolicy). This package does not
// interpret policies; the caller brings the policy engine.
type PolicyReplayer interface {
	Replay(policy json.RawMessage, e *Entry) error
}

// policyRules checks the policy links of a format 2 entry and replays it.
func (s *logState) policyRules(e *Entry) string {
	if e.Kind == KindPolicyLoaded {
		if len(e.Policy) == 0 {
			return "policy.loaded without a policy"
		}
		if sum, err := policyHash(e.Policy); err != nil || sum != e.PolicySHA256 {
			return fmt.Sprintf("policy_sha256 %s is not the SHA-256 of the policy's JCS form (%s)", e.PolicySHA256, sum)
		}
		if s.policies == nil {
			s.policies = map[string]*Entry{}
		}
		if s.policies[e.PolicySHA256] == nil {
			s.policies[e.PolicySHA256] = e
		}
		if s.firstPolicy == 0 {
			s.firstPolicy = e.Seq
		}
		return ""
	}
	if len(e.Policy) > 0 {
		return e.Kind + " carries a policy; only policy.loaded does"
	}
	if !decidedByPolicy(e.Kind) {
		if e.PolicySHA256 != "" {
			return e.Kind + " names a policy; only decisions do"
		}
		return ""
	}
	var loaded *Entry
	switch {
	case e.PolicySHA256 != "":
		if loaded = s.policies[e.PolicySHA256]; loaded == nil {
			return fmt.Sprintf("decided by policy %s, which no earlier policy.loaded carries", e.PolicySHA256)
		}
	case s.firstPolicy != 0:
		return fmt.Sprintf("%s names no policy, after a policy was loaded at seq %d", e.Kind, s.firstPolicy)
	}
	if s.replayer == nil || e.Kind == KindCallDenied {
		// A denial lets nothing run; replay checks what ran or was
		// put to the approvers.
		return ""
	}
	if loaded == nil {
		s.unreplayed++
		return ""
	}
	if len(e.Args) == 0 && !e.ArgsRedact {
		// The call's args are in an earlier entry (format 3): replay
		// on them, as the decision was made.
		if args := s.req.argsOf(e); len(args) > 0 {
			c := *e
			c.Args = args
			e = &c
		}
	}
	if err := s.replayer.Replay(loaded.Policy, e); err != nil {
		return fmt.Sprintf("policy replay (policy.loaded at seq %d): %v", loaded.Seq, err)
	}
	s.replayed++
	return ""
}

// apply checks one entry against the state and adds it; it returns why
// the entry breaks a rule, or "".
func (s *logState) apply(e *Entry) string {
	switch e.V {
	case 0:
		if s.format2 != 0 {
			return fmt.Sprintf("format 1 entry after format 2 began at seq %d: a log never goes back to an older format", s.format2)
		}
		s.format1++
	default:
		if s.format2 == 0 {
			s.format2 = e.Seq
		}
		if e.V < s.format {
			return fmt.Sprintf("format %d entry after format %d: a log never goes back to an older format", e.V, s.format)
		}
		s.format = e.V
	}
	if reason := s.creds.check(e); reason != "" {
		return reason
	}
	if e.Kind == KindApproverEnrolled && s.roots != nil {
		if reason := s.attestation(e); reason != "" {
			return reason
		}
	}
	if e.V == 0 {
		s.req.legacyRequest(e)
		return ""
	}
	if reason := s.policyRules(e); reason != "" {
		return reason
	}
	if reason := s.req.check(e); reason != "" {
		return reason
	}
	return s.req.argsAt(e)
}

// attestation checks an enrollment's attestation against the roots, as of
// the enrollment's time.
func (s *logState) attestation(e *Entry) string {
	if e.AttestationObject == "" {
		return fmt.Sprintf("approver.enrolled of %s's key %s keeps no attestation; the roots cannot vouch for it", e.Approver, e.CredentialID)
	}
	att, err1 := base64.RawURLEncoding.DecodeString(e.AttestationObject)
	cd, err2 := base64.RawURLEncoding.DecodeString(e.ClientDataJSON)
	if err1 != nil || err2 != nil {
		return "approver.enrolled: attestation_object or client_data_json is not base64url"
	}
	at, _ := time.Parse(TimeFormat, e.Time)
	if _, err := attest.Check(att, cd, s.roots, at); err != nil {
		return fmt.Sprintf("approver.enrolled of %s's key %s: %v", e.Approver, e.CredentialID, err)
	}
	s.attested++
	return ""
}

func verifyStream(r io.Reader, pub ed25519.PublicKey, v note.Verifier, prev *verified, keep bool, opts VerifyOptions) (*verified, error) {
	allSigs, replayer := opts.AllSignatures, opts.ReplayPolicy
	br := bufio.NewReaderSize(r, 1<<16)
	var cpLine []byte
	var wLines [][]byte
	lineNo := 0
	next := func() (item, bool, error) {
		for {
			line, err := readLine(br)
			if err == io.EOF {
				return item{}, false, nil
			}
			if err != nil {
				return item{}, false, err
			}
			lineNo++
			if bytes.HasPrefix(line, []byte(`{"checkpoint"`)) {
				cpLine = line
				return item{}, false, nil
			}
			if bytes.HasPrefix(line, []byte(`{"witnessed"`)) {
				wLines = append(wLines, line)
				continue
			}
			if wLines != nil {
				return item{}, false, errors.New("an entry after a witnessed line: witnessed lines come after the last entry")
			}
			return item{line: line, checkSig: allSigs}, true, nil
		}
	}

	st := &verified{}
	var (
		want  = int64(1)
		prevH [32]byte
		fr    frontier
		tree  *memTree
		state = &logState{creds: credentials{}, req: newRequirements()}
	)
	if prev != nil {
		// The previous export's entries were replayed when it was
		// verified; this one's entries up to prev.last must equal them,
		// so replay goes on from there.
		state = prev.state
	}
	state.replayer = replayer
	state.roots = opts.AttestationRoots
	st.state = state
	if prev != nil || opts.anchored {
		// A previous export or bare checkpoint is proven a prefix by a
		// consistency proof over the whole tree.
		tree = &memTree{}
	}
	st.tree = tree
	startAt := func(seq int64) *VerifyError {
		if seq <= 1 {
			return nil
		}
		if prev == nil {
			return &VerifyError{seq, fmt.Sprintf("export starts at seq %d: verify it with a previous export that reaches seq %d", seq, seq-1)}
		}
		if prev.last < seq-1 {
			return &VerifyError{prev.last + 1, fmt.Sprintf("missing: the previous export ends at seq %d, this one starts at %d", prev.last, seq)}
		}
		want = seq
		prevH = prev.hashes[seq-2]
		for i, h := range prev.hashes[:seq-1] {
			fr.add(leafHash(h))
			if err := tree.add(int64(i), leafHash(h)); err != nil {
				return &VerifyError{int64(i + 1), err.Error()}
			}
		}
		return nil
	}
	chainErr := runChecks(next, pub, func(r *result) *VerifyError {
		if st.entries == 0 {
			if r.parsed {
				if err := startAt(r.seq); err != nil {
					return err
				}
			}
			st.first = want
		}
		if r.parsed && r.seq != want {
			if r.seq > want {
				return &VerifyError{want, fmt.Sprintf("missing: the next entry is seq %d", r.seq)}
			}
			return &VerifyError{want, fmt.Sprintf("out of order: found seq %d", r.seq)}
		}
		if r.err != nil {
			return &VerifyError{want, r.err.Reason}
		}
		if r.prev != prevH {
			return &VerifyError{r.seq, "prev_hash does not match the hash of the entry before"}
		}
		if prev != nil && r.seq <= prev.last && prev.hashes[r.seq-1] != r.hash {
			return &VerifyError{r.seq, "differs from the same entry in the previous export"}
		}
		if prev == nil || r.seq > prev.last {
			if reason := state.apply(r.entry); reason != "" {
				return &VerifyError{r.seq, reason}
			}
		}
		if isAssertionKind(r.entry.Kind) {
			st.assertions++
		}
		if r.sig != nil {
			st.signatures++
		}
		leaf := leafHash(r.hash)
		fr.add(leaf)
		if tree != nil {
			if err := tree.add(r.seq-1, leaf); err != nil {
				return &VerifyError{r.seq, err.Error()}
			}
		}
		if keep {
			st.hashes = append(st.hashes, r.hash)
		}
		prevH = r.hash
		st.entries++
		st.last = r.seq
		want++
		return nil
	})
	if chainErr != nil {
		var ve *VerifyError
		if errors.As(chainErr, &ve) {
			return nil, ve
		}
		return nil, &VerifyError{want, "reading line " + fmt.Sprint(lineNo+1) + ": " + chainErr.Error()}
	}
	last := want - 1
	if cpLine == nil {
		return nil, &VerifyError{last + 1, "missing: the export does not end with a checkpoint line"}
	}
	if line, err := readLine(br); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%.40q", line)
		}
		return nil, &VerifyError{last + 1, "data after the checkpoint line: " + err.Error()}
	}
	msg, err := decodeCheckpointLine(cpLine)
	if err != nil {
		return nil, &VerifyError{last, err.Error()}
	}
	cp, err := openCheckpoint(msg, v)
	if err != nil {
		return nil, &VerifyError{last, err.Error()}
	}
	if st.entries == 0 && prev != nil && cp.Size > 0 {
		// An export with no entries (export --since the last seq): its
		// checkpoint can only be checked against the previous export's
		// leaves. It proves the server signed the same tree again and
		// nothing more.
		if cp.Size > prev.last {
			return nil, &VerifyError{prev.last + 1, fmt.Sprintf("missing: the export holds no entries, its checkpoint covers %d, the previous export ends at seq %d", cp.Size, prev.last)}
		}
		var pfr frontier
		for _, h := range prev.hashes[:cp.Size] {
			pfr.add(leafHash(h))
		}
		fr, last = pfr, cp.Size
		st.empty = true
	}
	switch {
	case cp.Size < last:
		return nil, &VerifyError{cp.Size + 1, fmt.Sprintf("not covered by the checkpoint (size %d)", cp.Size)}
	case cp.Size > last:
		return nil, &VerifyError{last + 1, fmt.Sprintf("missing: the checkpoint covers %d entries, the export ends at seq %d", cp.Size, last)}
	case cp.Root != fr.root():
		return nil, &VerifyError{last, "the checkpoint's root hash is not the Merkle root of the entries"}
	}
	st.cp = cp
	for _, line := range wLines {
		msg, proof, err := decodeWitnessedLine(line)
		if err != nil {
			return nil, &VerifyError{last, err.Error()}
		}
		wcp, err := openCheckpoint(msg, v)
		if err != nil {
			return nil, &VerifyError{last, "witnessed " + err.Error()}
		}
		if wcp.Size > cp.Size {
			return nil, &VerifyError{cp.Size + 1, fmt.Sprintf("missing: a witnessed checkpoint covers %d entries, the export's checkpoint %d", wcp.Size, cp.Size)}
		}
		if err := tlog.CheckTree(proof, cp.Size, cp.Root, wcp.Size, wcp.Root); err != nil {
			return nil, &VerifyError{wcp.Size, "the witnessed checkpoint of size " + fmt.Sprint(wcp.Size) + " is not a prefix of the export's checkpoint: " + err.Error()}
		}
		st.witnessed = append(st.witnessed, witnessedCP{wcp, msg})
	}
	if prev != nil {
		if last < prev.last {
			return nil, &VerifyError{last + 1, fmt.Sprintf("missing: the previous export reaches seq %d, this one ends at %d", prev.last, last)}
		}
		var err error
		if st.empty {
			// Same size as the previous tree (checked above): the root
			// was recomputed from the previous export's own leaves.
		} else if prev.cp.Size > 0 { // an empty tree is a prefix of every tree
			var proof tlog.TreeProof
			proof, err = tlog.ProveTree(cp.Size, prev.cp.Size, tree)
			if err == nil {
				err = tlog.CheckTree(proof, cp.Size, cp.Root, prev.cp.Size, prev.cp.Root)
			}
		}
		if err != nil {
			return nil, &VerifyError{prev.cp.Size, "the previous checkpoint is not a prefix of this one: " + err.Error()}
		}
	}
	return st, nil
}

// readLine returns the next line without its newline, io.EOF at the end, and
// refuses lines over MaxLine. A last line without a newline is accepted.
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

type checkpointLine struct {
	Checkpoint string `json:"checkpoint"`
}

func encodeCheckpointLine(msg []byte) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(checkpointLine{string(msg)}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

func decodeCheckpointLine(line []byte) ([]byte, error) {
	var c checkpointLine
	if err := json.Unmarshal(line, &c); err != nil {
		return nil, fmt.Errorf("checkpoint line: %v", err)
	}
	if again, err := encodeCheckpointLine([]byte(c.Checkpoint)); err != nil || !bytes.Equal(again, line) {
		return nil, errors.New("checkpoint line is not in canonical form")
	}
	return []byte(c.Checkpoint), nil
}

// item is one entry to check: an export line, or a stored row.
type item struct {
	line     []byte
	fromDB   bool
	rowSeq   int64
	rowHash  string
	checkSig bool
}

// result is what checking one item on its own proved; links between
// items are checked in order by the caller of runChecks.
type result struct {
	parsed bool // seq is known
	seq    int64
	prev   [32]byte
	hash   [32]byte
	err    *VerifyError // Seq left 0: the caller knows the position
	entry  *Entry       // the parsed entry, when err is nil
	sig    []byte       // the server's signature over signed, still to check; nil if not to be checked
	signed []byte
}

func checkItem(it *item) (r result) {
	fail := func(format string, args ...any) result {
		r.err = &VerifyError{Reason: fmt.Sprintf(format, args...)}
		return r
	}
	if it.fromDB {
		r.parsed, r.seq = true, it.rowSeq
	}
	var e Entry
	// segmentio's decoder is several times faster than encoding/json's on
	// these lines. What it decodes is held to the line just below: the
	// entry must encode (with encoding/json) to exactly these bytes, and
	// only one entry does.
	if err := fastjson.Unmarshal(it.line, &e); err != nil {
		return fail("not a JSON entry: %v", err)
	}
	if !it.fromDB {
		r.parsed, r.seq = true, e.Seq
	}
	if again, err := encodeLine(&e); err != nil || !bytes.Equal(again, it.line) {
		return fail("entry is not in canonical form (unknown, duplicate or reordered fields, or odd spacing)")
	}
	if it.fromDB && e.Seq != it.rowSeq {
		return fail("row seq %d holds the entry for seq %d", it.rowSeq, e.Seq)
	}
	if e.Kind == "" {
		return fail("entry has no kind")
	}
	var err error
	if r.prev, err = decodeHash(e.PrevHash); err != nil {
		return fail("prev_hash is %v", err)
	}
	if r.hash, err = decodeHash(e.Hash); err != nil {
		return fail("hash is %v", err)
	}
	if it.fromDB && it.rowHash != e.Hash {
		return fail("the row's hash column differs from the entry's hash")
	}
	// Format 2 stores JSON members in their RFC 8785 form (lineJSON);
	// older servers stored them as the caller wrote them. Members checked
	// to be in that form, and holding no \u2028 or \u2029 (the only
	// escapes lineJSON adds), are already what the hash covers.
	canon := jcs.Transform
	switch e.V {
	case 0:
	case 2, Format:
		asIs := true
		for name, m := range map[string]json.RawMessage{"args": e.Args, "result": e.Result, "authorization_details": e.AuthorizationDetails, "policy": e.Policy, "usage": e.Usage} {
			if len(m) == 0 {
				continue
			}
			if !inLineForm(m) && !sameLineForm(m) {
				if name == "usage" {
					asIs = false // not held to the form; the hash decides
					continue
				}
				return fail("%s is not in RFC 8785 form", name)
			}
			asIs = asIs && !escapesSeparators(m)
		}
		if asIs {
			canon = alreadyCanonical
		}
	default:
		return fail("entry format v %d is not one this verifier knows (1, 2 or %d)", e.V, Format)
	}

	sum, err := chainHashWith(r.prev, &e, canon)
	if err != nil {
		return fail("entry cannot be canonicalized: %v", err)
	}
	if sum != r.hash {
		return fail("hash does not match the entry's content")
	}
	sig, err := decodeSig(e.Sig)
	if err != nil {
		return fail("sig is %v", err)
	}
	if why := formatRules(&e); why != "" {
		return fail("%s", why)
	}
	if it.checkSig {
		r.sig, r.signed = sig, sum[:] // verified by runChecks' worker
	}
	r.entry = &e
	return r
}

// validSig is the one rule for the server's signatures on entries: valid
// exactly when crypto/ed25519 says so (cofactorless, canonical encodings,
// as RFC 8032 and the checkpoints' note verifier). A faster batch check
// would accept signatures with small-order components that this refuses,
// giving one signature two verdicts.
func validSig(pub ed25519.PublicKey, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
}

// runChecks checks items from next on every core and hands the results to
// consume in order, stopping at the first error consume returns.
func runChecks(next func() (item, bool, error), pub ed25519.PublicKey, consume func(*result) *VerifyError) error {
	const chunkSize = 256
	type chunk struct {
		items []item
		res   []result
		done  chan struct{}
	}
	workers := runtime.GOMAXPROCS(0)
	todo := make(chan *chunk, workers*2)
	order := make(chan *chunk, workers*4)
	stop := make(chan struct{})
	produced := make(chan struct{})
	var readErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range todo {
				for i := range c.items {
					c.res[i] = checkItem(&c.items[i])
					if r := &c.res[i]; r.err == nil && r.sig != nil && !validSig(pub, r.signed, r.sig) {
						r.err = &VerifyError{Reason: "sig does not verify with the server key"}
					}
				}
				close(c.done)
			}
		})
	}
	go func() {
		defer close(produced)
		defer close(order)
		defer close(todo)
		for {
			c := &chunk{done: make(chan struct{})}
			end := false
			for len(c.items) < chunkSize {
				it, ok, err := next()
				if err != nil {
					readErr = err
				}
				if !ok {
					end = true
					break
				}
				c.items = append(c.items, it)
			}
			if len(c.items) > 0 {
				c.res = make([]result, len(c.items))
				todo <- c
				select {
				case order <- c:
				case <-stop:
					return
				}
			}
			if end {
				return
			}
		}
	}()
	var failed *VerifyError
	for c := range order {
		<-c.done
		for i := range c.res {
			if failed = consume(&c.res[i]); failed != nil {
				break
			}
		}
		if failed != nil {
			break
		}
	}
	close(stop)
	for range order { // let the producer finish
	}
	<-produced
	wg.Wait()
	if failed != nil {
		return failed
	}
	return readErr
}
