package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/countersign/countersign/digest"
	"github.com/gowebpki/jcs"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// encodeLine is the stored and exported form of an entry: compact JSON in
// struct field order, without HTML escaping, no trailing newline.
func encodeLine(e *Entry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// chainHash computes hash = SHA-256(prev || JCS(e without hash and sig)).
//
// It first tries the writer's encoding (membersOf), which builds
// the same bytes from the struct without parsing the whole entry back (a
// full JCS pass was most of a verify's time). That encoding is injective,
// so when it gives the entry's recorded hash, the entry is the one the
// writer hashed; otherwise the reference below decides. The writer's
// encoding writes time unescaped, as the writer sets it, so only a time
// that needs no escaping takes the fast way: a quote in it could move
// another member's text into time under the same bytes.
func chainHash(prev [32]byte, e *Entry) ([32]byte, error) {
	return chainHashWith(prev, e, jcs.Transform)
}

// chainHashWith is chainHash with canon giving the RFC 8785 form of the
// entry's JSON members (see membersOf).
func chainHashWith(prev [32]byte, e *Entry, canon func([]byte) ([]byte, error)) ([32]byte, error) {
	if e.PrevHash == string(hexString(prev[:])) && e.Hash != "" && plainTime(e.Time) {
		c := *e
		c.Seq, c.Time, c.PrevHash, c.Hash, c.Sig = 0, "", "", "", ""
		if members, err := membersOf(&c, canon); err == nil {
			p := prepared{members: members}
			if sum := p.hash(prev, e.Seq, e.Time); string(hexString(sum[:])) == e.Hash {
				return sum, nil
			}
		}
	}
	return referenceHash(prev, e)
}

// plainTime reports whether t holds only what a timestamp does.
func plainTime(t string) bool {
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || c == '-' || c == ':' || c == '.' || c == '+') {
			return false
		}
	}
	return true
}

// referenceHash is chainHash by definition.
func referenceHash(prev [32]byte, e *Entry) ([32]byte, error) {
	c := *e
	c.Hash, c.Sig = "", ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return [32]byte{}, err
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canon)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// lineJSON is how a JSON member (args, result, authorization_details)
// appears on a format 2 line: its RFC 8785 form with U+2028 and U+2029
// written as \u2028 and \u2029, as encoding/json writes them in every
// other string of the line, so one escaping rule holds for the whole line.
// JCS reads the escapes back as the characters: the hash is the same.
func lineJSON(raw []byte) ([]byte, error) {
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, err
	}
	// JCS output is valid UTF-8 with only ASCII outside strings, so these
	// byte sequences are the two characters, inside strings.
	canon = bytes.ReplaceAll(canon, []byte("\u2028"), []byte(`\u2028`))
	return bytes.ReplaceAll(canon, []byte("\u2029"), []byte(`\u2029`)), nil
}

// sameLineForm reports whether m is already its own line form, by the
// transform; inLineForm answers the same question quickly for most m.
func sameLineForm(m []byte) bool {
	c, err := lineJSON(m)
	return err == nil && bytes.Equal(c, m)
}

// ArgsSHA256 is digest.ArgsSHA256, hashing args as they are when their
// line form is also their RFC 8785 form, as it is for nearly every entry
// the writer prepares or verify reads: a transform saved per entry.
func ArgsSHA256(args []byte) ([32]byte, error) {
	if inLineForm(args) && !escapesSeparators(args) {
		return sha256.Sum256(args), nil
	}
	return digest.ArgsSHA256(args)
}

func decodeHash(s string) ([32]byte, error) {
	var h [32]byte
	if len(s) != 64 {
		return h, errors.New("not 64 hex digits")
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, errors.New("not 64 hex digits")
	}
	if hex.EncodeToString(h[:]) != s {
		return h, errors.New("not lowercase hex")
	}
	return h, nil
}

func encodeSig(sig []byte) string { return base64.RawURLEncoding.EncodeToString(sig) }

func decodeSig(s string) ([]byte, error) {
	sig, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, errors.New("not a base64url Ed25519 signature")
	}
	return sig, nil
}

func decodeStdBase64(s string) ([]byte, error) { return base64.StdEncoding.Strict().DecodeString(s) }

// LeafHash is the Merkle tree leaf of an entry with this hash.
func LeafHash(entryHash [32]byte) tlog.Hash { return tlog.RecordHash(entryHash[:]) }

// Frontier computes RFC 6962 tree roots incrementally, keeping only the
// roots of the complete subtrees on the right edge (at most log₂ n hashes).
// The zero value is the empty tree.
type Frontier struct {
	n     int64
	nodes []tlog.Hash // left to right, strictly decreasing sizes
	sizes []int64
}

// Add appends a leaf.
func (f *Frontier) Add(leaf tlog.Hash) {
	f.nodes = append(f.nodes, leaf)
	f.sizes = append(f.sizes, 1)
	f.n++
	for k := len(f.nodes); k >= 2 && f.sizes[k-1] == f.sizes[k-2]; k-- {
		f.nodes[k-2] = tlog.NodeHash(f.nodes[k-2], f.nodes[k-1])
		f.sizes[k-2] *= 2
		f.nodes, f.sizes = f.nodes[:k-1], f.sizes[:k-1]
	}
}

// Size is the number of leaves added.
func (f *Frontier) Size() int64 { return f.n }

// Root is the tree's root hash.
func (f *Frontier) Root() tlog.Hash {
	if len(f.nodes) == 0 {
		return tlog.Hash(sha256.Sum256(nil)) // RFC 6962: the empty tree
	}
	h := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.nodes[i], h)
	}
	return h
}

// Checkpoint is a parsed, verified checkpoint.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	Note   []byte // the signed note text
}

func checkpointText(size int64, root tlog.Hash) string {
	return fmt.Sprintf("%s\n%d\n%s\n", KeyName, size, base64.StdEncoding.EncodeToString(root[:]))
}

func signCheckpoint(s note.Signer, size int64, root tlog.Hash) ([]byte, error) {
	return note.Sign(&note.Note{Text: checkpointText(size, root)}, s)
}

// OpenCheckpoint verifies a signed checkpoint note with v (the server
// key's verifier, [ParsePublicKey]) and parses its body. Extension lines
// after the root are refused: we never write them.
func OpenCheckpoint(msg []byte, v note.Verifier) (*Checkpoint, error) {
	return openCheckpoint(msg, note.VerifierList(v))
}

// openCheckpoint is OpenCheckpoint with any of the keys vs.
func openCheckpoint(msg []byte, vs note.Verifiers) (*Checkpoint, error) {
	n, err := note.Open(msg, vs)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return nil, errors.New("checkpoint is not signed by the server key")
		}
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return nil, errors.New("checkpoint signature does not verify with the server key")
		}
		return nil, fmt.Errorf("checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return nil, errors.New("checkpoint: want origin, size and root lines")
	}
	if lines[0] != KeyName {
		return nil, fmt.Errorf("checkpoint: origin %q, want %q", lines[0], KeyName)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return nil, errors.New("checkpoint: bad tree size")
	}
	root, err := decodeStdBase64(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return nil, errors.New("checkpoint: bad root hash")
	}
	c := &Checkpoint{Origin: lines[0], Size: size, Note: msg}
	copy(c.Root[:], root)
	return c, nil
}

// DecodeArgsSHA256 decodes an entry's args_sha256, refusing any form but
// 64 lowercase hex digits.
func DecodeArgsSHA256(s string) ([32]byte, error) {
	var sum [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return sum, fmt.Errorf("args_sha256 %q is not 64 lowercase hex digits", s)
	}
	copy(sum[:], b)
	return sum, nil
}
