package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"

	"github.com/gowebpki/jcs"
	fastjson "github.com/segmentio/encoding/json"
)

// The checks of one line on its own, shared by [Open]'s check of the
// stored log and the offline verifier (package verify), which checks
// the links between lines in order.

type checkpointLine struct {
	Checkpoint string `json:"checkpoint"`
}

// EncodeCheckpointLine is an export's final line, {"checkpoint":"<note>"},
// in the one form an export holds it.
func EncodeCheckpointLine(msg []byte) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(checkpointLine{string(msg)}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// ExportLine is a stored line as an export carries it: without its sig.
// Checking every entry's signature would cost four times the rest of a
// verify (bench/README.md), and the signed checkpoint already proves
// every entry; a signature that nobody checks would only give two
// verifiers two verdicts on one export. The stored sig stays for the
// server's check of its own tail after the last checkpoint.
func ExportLine(body []byte) []byte {
	i := bytes.LastIndex(body, []byte(`,"sig":"`))
	if i < 0 {
		return body
	}
	return append(body[:i:i], '}')
}

// Line is one entry to check: an export line, or a stored row.
type Line struct {
	Bytes    []byte
	CheckSig bool // check the entry's own sig too
	fromDB   bool
	rowSeq   int64
	rowHash  string
}

// Checked is what checking one [Line] on its own proved: the entry is
// JSON in its one canonical form, of a known format, its hash is that of
// its content and prev_hash, its sig is well formed (and valid, when
// asked), and it keeps the rules of its format ([Bound]). The links
// between lines are the caller's to check, in order.
type Checked struct {
	Parsed  bool // Seq is known
	Seq     int64
	Prev    [32]byte
	Hash    [32]byte
	Problem string // why the line is refused; "" when it passed
	Entry   *Entry // the parsed entry, when Problem is ""
	// SigChecked: the entry's own sig was verified.
	SigChecked bool

	sig    []byte // the server's signature over signed, still to check; nil if not to be checked
	signed []byte
}

func checkLine(it *Line) (r Checked) {
	fail := func(format string, args ...any) Checked {
		r.Problem = fmt.Sprintf(format, args...)
		return r
	}
	if it.fromDB {
		r.Parsed, r.Seq = true, it.rowSeq
	}
	var e Entry
	// segmentio's decoder is several times faster than encoding/json's on
	// these lines. What it decodes is held to the line just below: the
	// entry must encode (with encoding/json) to exactly these bytes, and
	// only one entry does.
	if err := fastjson.Unmarshal(it.Bytes, &e); err != nil {
		return fail("not a JSON entry: %v", err)
	}
	if !it.fromDB {
		r.Parsed, r.Seq = true, e.Seq
	}
	if again, err := encodeLine(&e); err != nil || !bytes.Equal(again, it.Bytes) {
		return fail("entry is not in canonical form (unknown, duplicate or reordered fields, or odd spacing)")
	}
	if it.fromDB && e.Seq != it.rowSeq {
		return fail("row seq %d holds the entry for seq %d", it.rowSeq, e.Seq)
	}
	if e.Kind == "" {
		return fail("entry has no kind")
	}
	var err error
	if r.Prev, err = decodeHash(e.PrevHash); err != nil {
		return fail("prev_hash is %v", err)
	}
	if r.Hash, err = decodeHash(e.Hash); err != nil {
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
				// usage too: every server that wrote it stored its RFC
				// 8785 form, and one entry has one line.
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

	sum, err := chainHashWith(r.Prev, &e, canon)
	if err != nil {
		return fail("entry cannot be canonicalized: %v", err)
	}
	if sum != r.Hash {
		return fail("hash does not match the entry's content")
	}
	// An export line carries no sig (ExportLine): the checkpoint proves
	// every entry. One that does (an export made before) has it checked,
	// whatever was asked: no entry carries a signature nobody checks.
	var sig []byte
	if e.Sig != "" || it.fromDB {
		if sig, err = decodeSig(e.Sig); err != nil {
			return fail("sig is %v", err)
		}
	}
	if why := formatRules(&e); why != "" {
		return fail("%s", why)
	}
	if sig != nil && (it.CheckSig || !it.fromDB) {
		r.sig, r.signed = sig, sum[:] // verified by CheckLines' worker
	}
	r.Entry = &e
	return r
}

// ValidSig is the one rule for the server's signatures on entries: valid
// exactly when crypto/ed25519 says so (cofactorless, canonical encodings,
// as RFC 8032 and the checkpoints' note verifier). A faster batch check
// would accept signatures with small-order components that this refuses,
// giving one signature two verdicts.
func ValidSig(pub ed25519.PublicKey, msg, sig []byte) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
}

// CheckLines checks the lines from next on every core, the sigs asked for
// against pub or, after a key.rotated line, the key it names, and hands
// the results to consume in order; consume must check each key.rotated
// entry with RotationProblem. It stops at the
// first error consume returns and returns it, or else next's error.
func CheckLines(next func() (Line, bool, error), pub ed25519.PublicKey, consume func(*Checked) error) error {
	const chunkSize = 256
	type chunk struct {
		items []Line
		keys  []ed25519.PublicKey // the key in force at each line
		res   []Checked
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
					c.res[i] = checkLine(&c.items[i])
					if r := &c.res[i]; r.Problem == "" && r.sig != nil {
						if r.SigChecked = true; !ValidSig(c.keys[i], r.signed, r.sig) {
							r.Problem = "sig does not verify with the server key"
						}
					}
				}
				close(c.done)
			}
		})
	}
	cur := pub
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
				// A key.rotated line is signed by the key before it and
				// hands every later line to its new key; its sig is always
				// checked, and the consumer checks the rest of it
				// (RotationProblem) before trusting what follows.
				c.keys = append(c.keys, cur)
				if next := rotationKey(it.Bytes); next != nil {
					it.CheckSig = true
					cur = next
				}
				c.items = append(c.items, it)
			}
			if len(c.items) > 0 {
				c.res = make([]Checked, len(c.items))
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
	var failed error
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
