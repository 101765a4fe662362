package verify

import (
	"bufio"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/countersign/countersign/audit"
)

// Error is the first problem Export found: the seq of the first bad
// entry and why. Problems with the checkpoint name the seq it should cover.
type Error struct {
	Seq    int64
	Reason string
}

func (e *Error) Error() string {
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
	Replayed   int    // decisions replayed against their policy (Options.ReplayPolicy)
	Unreplayed int    // decisions that name no policy, so could not be replayed
	Signatures int64  // entry signatures checked one by one: those an older export carries
	Attested   int    // enrolled keys whose attestation chains to a trusted root (Options.AttestationRoots)
	Extends    int64  // tree size of the previous export proven to be a prefix; 0 without one
	NothingNew bool   // no entries: only that the checkpoint matches the previous export is proven

	// WitnessedLines counts the export's cosigned checkpoints (each
	// server-signed and proven a prefix of the final checkpoint).
	WitnessedLines int
	// Witnessed is the largest tree size cosigned by the quorum of the
	// trusted witnesses (Options.WitnessKeys), and Cosigners their
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

// Options tune [Export]. The zero value checks a complete export.
type Options struct {
	// Previous is an older export of the same log that this one must
	// extend; it is verified too, with the same options.
	Previous io.Reader

	// AllSignatures changes nothing since issue 27: exports carry no
	// entry sig, and every sig an older export carries is checked. Kept
	// so that callers still compile.
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

// Export checks an export offline against the server's public key (in the
// [audit.PublicKeyText] form): every entry's canonical form, hash, link and seq,
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
// key makes both. Exports therefore carry no entry sig; a line that
// carries one (an export made before issue 27) has it checked, so that
// no signature in an export goes unchecked.
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
// Failures are *Error.
func Export(export io.Reader, publicKey string, opts Options) (Summary, error) {
	pub, v, err := audit.ParsePublicKey(publicKey)
	if err != nil {
		return Summary{}, err
	}
	wp, err := newWitnessPolicy(opts.WitnessKeys, opts.WitnessQuorum)
	if err != nil {
		return Summary{}, err
	}
	var prev *verified
	var anchor *audit.Checkpoint
	var anchorMsg []byte
	var anchorSigners []string
	if opts.Previous != nil {
		pr := bufio.NewReaderSize(opts.Previous, 1<<16)
		if first, err := pr.Peek(1); err == nil && first[0] != '{' {
			// A bare checkpoint, such as a witness's cosigned one.
			if anchorMsg, err = readPrevious(pr); err != nil {
				return Summary{}, err
			}
			opts.anchored = true
		}
		opts.Previous = pr
	}
	if opts.Previous != nil && anchorMsg == nil {
		prev, err = verifyStream(opts.Previous, pub, v, nil, true, opts)
		if err != nil {
			var ve *Error
			if errors.As(err, &ve) {
				return Summary{}, &Error{ve.Seq, "previous export: " + ve.Reason}
			}
			return Summary{}, fmt.Errorf("previous export: %w", err)
		}
	}
	st, err := verifyStream(export, pub, v, prev, false, opts)
	if err != nil {
		return Summary{}, err
	}
	if anchorMsg != nil {
		if anchor, anchorSigners, err = previousCheckpoint(anchorMsg, &st.state.keys, wp); err != nil {
			return Summary{}, err
		}
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
	cp         *audit.Checkpoint
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
