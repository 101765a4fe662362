package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/countersign/countersign/vocab"
	"golang.org/x/mod/sumdb/note"
)

// RotationStatement is what the new key signs in a key.rotated entry
// (its signature member): that it takes over from previous. The old key's
// sig on the entry says the same from the other side, so a rotation
// needs both keys.
func RotationStatement(previous, next string) []byte {
	return []byte("countersign key.rotated\n" + previous + "\n" + next + "\n")
}

// RotationProblem checks a key.rotated entry whose sig verified with
// trusted, the key in force before it: it must name trusted as its
// previous key and carry the new key's signature of RotationStatement. It
// returns the new key, or nil and the reason.
func RotationProblem(e *Entry, trusted ed25519.PublicKey) (ed25519.PublicKey, string) {
	if e.PreviousKey != PublicKeyText(trusted) {
		return nil, "key.rotated: previous_key is not the key in force"
	}
	next, _, err := ParsePublicKey(e.PublicKey)
	if err != nil {
		return nil, "key.rotated: public_key: " + err.Error()
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(e.Signature)
	if err != nil || !ValidSig(next, RotationStatement(e.PreviousKey, e.PublicKey), sig) {
		return nil, "key.rotated: signature does not verify with the new key"
	}
	return next, ""
}

// rotationKey is the new key a line names when it is a key.rotated entry
// (nil otherwise), read before the line is checked: CheckLines checks
// later sigs with it, and the line's own checks refuse it if it lies.
func rotationKey(line []byte) ed25519.PublicKey {
	if !bytes.Contains(line, []byte(`"`+vocab.KindKeyRotated+`"`)) {
		return nil
	}
	var e struct {
		Kind      vocab.Kind `json:"kind"`
		PublicKey string     `json:"public_key"`
	}
	if json.Unmarshal(line, &e) != nil || e.Kind != vocab.KindKeyRotated {
		return nil
	}
	pub, _, err := ParsePublicKey(e.PublicKey)
	if err != nil {
		return nil
	}
	return pub
}

// firstKey is the key the stored log began with: the previous key of its
// first rotation, or the key of this server when it has none.
func firstKey(ctx context.Context, q querier, current ed25519.PublicKey) (ed25519.PublicKey, error) {
	var body string
	err := q.QueryRowContext(ctx, `SELECT body FROM audit_entries WHERE `+rotatedLike+` ORDER BY seq LIMIT 1`).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return current, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read key rotations: %w", err)
	}
	var e Entry
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return nil, fmt.Errorf("audit: read key rotations: %w", err)
	}
	pub, _, err := ParsePublicKey(e.PreviousKey)
	if err != nil {
		return nil, &TamperError{e.Seq, "key.rotated: previous_key: " + err.Error()}
	}
	return pub, nil
}

// lastRotation is the seq of the last stored key.rotated entry, 0 if
// there is none.
func lastRotation(ctx context.Context, q querier) (int64, error) {
	var seq sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit_entries WHERE `+rotatedLike).Scan(&seq)
	if err != nil {
		return 0, fmt.Errorf("read key rotations: %w", err)
	}
	return seq.Int64, nil
}

// rotatedLike matches the bodies of key.rotated entries. SQLite stores
// body as a BLOB, which LIKE does not match as text.
const rotatedLike = `CAST(body AS TEXT) LIKE '%"kind":"` + string(vocab.KindKeyRotated) + `"%'`

// RotateKey hands the log to next: it appends a key.rotated entry signed
// by the current key and by next, and then signs every later entry and a
// checkpoint covering the rotation with next. The caller keeps next where
// the server will load it (audit rotate-key replaces server.key).
//
// Nothing else may append meanwhile (the command holds the data
// directory's lock): an entry sealed between the rotation and the switch
// would be signed by the retired key.
func (l *Log) RotateKey(ctx context.Context, next Signer, reason string) (Entry, error) {
	ns, err := newSigner(next)
	if err != nil {
		return Entry{}, err
	}
	cur := l.current()
	if bytes.Equal(cur.pub, ns.pub) {
		return Entry{}, errors.New("audit: rotate key: the new key is the current key")
	}
	prevText, nextText := PublicKeyText(cur.pub), PublicKeyText(ns.pub)
	sig, err := signWith(next, ns.pub, RotationStatement(prevText, nextText))
	if err != nil {
		return Entry{}, err
	}
	e, err := l.append(ctx, Entry{Kind: vocab.KindKeyRotated, PreviousKey: prevText, PublicKey: nextText,
		Signature: base64.RawURLEncoding.EncodeToString(sig), Reason: reason})
	if err != nil {
		return Entry{}, err
	}
	l.keyMu.Lock()
	l.signer = ns
	l.verifiers = append(l.verifiers, ns.v)
	l.keyMu.Unlock()
	if _, err := l.Checkpoint(ctx); err != nil {
		return e, err
	}
	return e, nil
}

// trust adds the retired keys (in the PublicKeyText form, checked) to
// those whose checkpoints the log reads.
func (l *Log) trust(retired []string) {
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	for _, k := range retired {
		if _, v, err := ParsePublicKey(k); err == nil {
			l.verifiers = append(l.verifiers, v)
		}
	}
}

// current is the signer in force.
func (l *Log) current() *signer {
	l.keyMu.RLock()
	defer l.keyMu.RUnlock()
	return l.signer
}

// trusted are the verifiers of every key the log has had.
func (l *Log) trusted() note.Verifiers {
	l.keyMu.RLock()
	defer l.keyMu.RUnlock()
	return note.VerifierList(l.verifiers...)
}
