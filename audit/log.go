package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/countersign/countersign/vocab"
	"github.com/gowebpki/jcs"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TimeFormat is the form of Entry.Time: RFC 3339 in UTC with all nine
// fractional digits, so times sort as text.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// TamperError reports a stored log that fails verification: the first bad
// seq and why. Seq 0 means the problem is not one entry (e.g. the tree).
type TamperError struct {
	Seq    int64
	Reason string
}

func (e *TamperError) Error() string {
	return fmt.Sprintf("audit: log tampered at seq %d: %s", e.Seq, e.Reason)
}

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit: log closed")

// Options tune a Log. The zero value is ready to use.
type Options struct {
	// Now is the clock for Entry.Time; default time.Now.
	Now func() time.Time
	// Logger hears of a failed startup check and failed background
	// checkpoints; default: discard.
	Logger *slog.Logger
	// CheckpointEvery, when positive, writes a checkpoint in the background
	// this often whenever entries were added since the last one.
	CheckpointEvery time.Duration
	// CallerCheckpoints leaves the background checkpoints to the caller,
	// who runs [Log.CheckpointLoop] when it should: replicas sharing one
	// log take turns (serve runs it while it leads), where each writing
	// its own would sign N checkpoints of one tree.
	CallerCheckpoints bool
	// MaxBatch caps how many Appends share one transaction; default 1024.
	MaxBatch int
	// Backend stores the chain; nil: the SQLite database Open is given
	// (package auditpg has PostgreSQL's). The Log closes it, and so does
	// an Open that fails.
	Backend Backend
	// Owner names this server on the entries it appends, where the
	// backend keeps owners (not in the line, so not hashed or exported).
	Owner string
	// ReadOnly opens a log this process must not change (a read-only
	// copy of a data directory, a backup being verified): Checkpoint
	// signs without storing what it signed, so Export works. Appends
	// fail, as the database refuses them.
	ReadOnly bool
}

// Log is the audit log in a shared database. It is safe for concurrent
// use, and other processes may append to the same database.
type Log struct {
	db        *sql.DB
	backend   Backend
	owner     string
	keyMu     sync.RWMutex
	signer    *signer         // the server key in force: entries' sig and checkpoints
	verifiers []note.Verifier // every key the log has had (key.rotated), to read old checkpoints
	now       func() time.Time
	maxBatch  int
	readOnly  bool

	broken *TamperError // set by Open, never cleared
	log    *slog.Logger

	policy atomic.Pointer[string] // hex SHA-256 of the policy LoadPolicy recorded last

	writeFailed atomic.Pointer[WriteFailure] // the last append's failure; nil once one commits

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *appendReq
	quit   chan struct{}
	done   chan struct{} // the writer has exited
	bgDone chan struct{} // the checkpoint ticker has exited
}

type appendReq struct {
	e    Entry
	pre  *prepared
	done chan appendResult
}

type appendResult struct {
	e   Entry
	err error
}

const schema = `
CREATE TABLE IF NOT EXISTS audit_entries (
	seq  INTEGER PRIMARY KEY,
	hash TEXT NOT NULL,
	body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_tree (
	idx  INTEGER PRIMARY KEY,
	hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	size    INTEGER NOT NULL,
	note    TEXT NOT NULL,
	created TEXT NOT NULL
);
-- Every append reads the largest checkpointed size.
CREATE INDEX IF NOT EXISTS audit_checkpoints_size ON audit_checkpoints (size);

CREATE TABLE IF NOT EXISTS audit_witnessed (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	witness TEXT NOT NULL,
	size    INTEGER NOT NULL,
	note    TEXT NOT NULL,
	created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_witnessed_by_witness ON audit_witnessed (witness, size);`

// Open creates the audit tables if needed (the backend's, when
// opts.Backend is set) and checks the stored log: every
// entry's hash and link, the signatures of the first entry and of every
// entry after the last checkpoint, and the checkpoint's signature and root.
//
// If the stored log fails the check, Open returns both the *Log (for
// reading and export) and a *TamperError; every Append on that Log fails
// with the same error. Any other error returns a nil *Log.
func Open(ctx context.Context, db *sql.DB, key ed25519.PrivateKey, opts Options) (*Log, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: bad server key")
	}
	return OpenSigner(ctx, db, key, opts)
}

// OpenSigner is [Open] with the server key behind a [Signer]: a key this
// process may not hold (PKCS #11, KMS) signs the entries and checkpoints.
func OpenSigner(ctx context.Context, db *sql.DB, key Signer, opts Options) (*Log, error) {
	s, err := newSigner(key)
	if err != nil {
		return nil, err
	}
	b := opts.Backend
	if b == nil {
		if b, err = newSQLiteBackend(ctx, db); err != nil {
			return nil, err
		}
	}
	l, err := open(ctx, db, b, s, opts)
	if l == nil {
		b.Close()
	}
	return l, err
}

func open(ctx context.Context, db *sql.DB, b Backend, s *signer, opts Options) (*Log, error) {
	l := &Log{
		db: db, backend: b, owner: opts.Owner, signer: s, verifiers: []note.Verifier{s.v},
		now: opts.Now, maxBatch: opts.MaxBatch, readOnly: opts.ReadOnly, log: opts.Logger,
		reqs: make(chan *appendReq, 4096),
		quit: make(chan struct{}), done: make(chan struct{}), bgDone: make(chan struct{}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.maxBatch <= 0 {
		l.maxBatch = 1024
	}
	// One snapshot: the log at one moment even while another process
	// appends, without holding the write lock.
	snap, stored, err := b.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: read log: %w", err)
	}
	tamper, err := l.checkStored(ctx, snap, stored)
	snap.Rollback()
	if err != nil {
		return nil, err
	}
	l.broken = tamper
	go l.writer()
	if opts.CheckpointEvery > 0 && tamper == nil && !opts.CallerCheckpoints {
		go l.checkpointLoop(opts.CheckpointEvery)
	} else {
		close(l.bgDone)
	}
	if tamper != nil {
		l.log.Error("audit log failed verification; appends refused", "seq", tamper.Seq, "reason", tamper.Reason)
		return l, tamper
	}
	return l, nil
}

// Err reports why the log refuses appends, or nil.
func (l *Log) Err() error {
	if l.broken != nil {
		return l.broken
	}
	return nil
}

// WriteFailure is why the log's last append failed to be stored (a full
// disk, a read-only file system, a database gone), and since when appends
// fail.
type WriteFailure struct {
	Err   error
	Since time.Time
}

// WriteErr reports why the last append could not be stored, or nil once
// one is: an operator's readiness probe asks it, so the log says it
// cannot be written as long as that holds. A refused entry (bad input)
// does not count; a broken log is Err's.
func (l *Log) WriteErr() *WriteFailure { return l.writeFailed.Load() }

// wrote records whether the writer's latest batch was stored.
func (l *Log) wrote(err error) {
	if err == nil {
		if l.writeFailed.Load() != nil {
			l.writeFailed.Store(nil)
		}
		return
	}
	if prev := l.writeFailed.Load(); prev != nil {
		l.writeFailed.Store(&WriteFailure{Err: err, Since: prev.Since})
		return
	}
	l.writeFailed.Store(&WriteFailure{Err: err, Since: time.Now()})
}

// PublicKey is the text form of the log's public key ([PublicKeyText]).
func (l *Log) PublicKey() string { return PublicKeyText(l.current().pub) }

// Append validates e, gives it the format version, the next seq, the time,
// the chain link, its hash and signature, and returns it once it is
// durably committed. Fields
// set by Append are ignored on input. If Args is present, ArgsSHA256 is
// computed (or checked, if given); with ArgsRedact set, or on a later
// entry of a call whose args an earlier entry holds (ArgsSeq or
// RequestID: bound.go), Args is dropped before storing. Reason and Result
// are bounded (Bound). An error means the entry may not be relied on: the
// caller must not proceed.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if e.Kind == vocab.KindKeyRotated {
		// Only RotateKey, which switches the key with it: a rotation
		// the signer did not follow would leave a log no key extends.
		return Entry{}, errors.New("audit: a key.rotated entry is appended by RotateKey alone")
	}
	return l.append(ctx, e)
}

func (l *Log) append(ctx context.Context, e Entry) (Entry, error) {
	if l.broken != nil {
		return Entry{}, l.broken
	}
	// Only decisions (and policy.loaded) name a policy: a call's entry
	// keeps the hash of the policy that decided it across a reload, but
	// when that call ends rejected or interrupted the entry is no decision,
	// and verify refuses a policy on it.
	switch {
	case e.Kind == vocab.KindPolicyLoaded:
	case !DecidedByPolicy(e.Kind):
		e.PolicySHA256 = ""
	case e.PolicySHA256 == "":
		if p := l.policy.Load(); p != nil {
			e.PolicySHA256 = *p
		}
	}
	pre, err := prepare(&e)
	if err != nil {
		return Entry{}, err
	}
	r := &appendReq{e: e, pre: pre, done: make(chan appendResult, 1)}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return Entry{}, ErrClosed
	}
	select {
	case l.reqs <- r:
	case <-ctx.Done():
		l.mu.RUnlock()
		return Entry{}, ctx.Err()
	}
	l.mu.RUnlock()
	// Once queued, wait for the outcome even if ctx ends: the entry may
	// commit, and the caller must learn whether it did.
	res := <-r.done
	return res.e, res.err
}

// DecidedByPolicy reports whether entries of kind record a policy decision
// and so name the policy that made it.
func DecidedByPolicy(kind vocab.Kind) bool {
	switch kind {
	case vocab.KindCallAllowed, vocab.KindCallDenied, vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindApprovalRequested:
		return true
	}
	return false
}

// LoadPolicy records the policy in force from now on: a policy.loaded
// entry carrying doc (the policy as JSON, e.g. authz.Document) and its
// hash, which every later decision appended through this Log names in
// policy_sha256. An auditor can then read the policy behind each decision
// and replay it offline. Call it once the policy is compiled, before any
// decision.
func (l *Log) LoadPolicy(ctx context.Context, doc json.RawMessage) (Entry, error) {
	sum, err := PolicySHA256(doc)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: policy: %w", err)
	}
	e, err := l.Append(ctx, Entry{Kind: vocab.KindPolicyLoaded, Policy: doc, PolicySHA256: sum, Reason: "policy in force from here on"})
	if err != nil {
		return e, err
	}
	l.policy.Store(&sum)
	return e, nil
}

// PolicySHA256 is the hex SHA-256 of the JCS form of a policy document.
func PolicySHA256(doc []byte) (string, error) {
	canon, err := jcs.Transform(doc)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), nil
}

// prepare checks an entry before it is queued, so one bad entry fails
// alone instead of failing its whole batch, and does the canonical
// encoding on the caller's goroutine so the single writer only splices in
// seq, time and prev_hash.
func prepare(e *Entry) (*prepared, error) {
	if e.Kind == "" {
		return nil, errors.New("audit: entry has no kind")
	}
	e.Seq, e.Time, e.PrevHash, e.Hash, e.Sig = 0, "", "", "", ""
	e.V = Format
	validUTF8Strings(e)
	Bound(e)
	if why := boundsBroken(e); why != "" {
		return nil, errors.New("audit: " + why)
	}
	// JSON members are stored in their RFC 8785 form, the form the hash
	// already covers, so the line shows exactly what is hashed: no HTML
	// escapes (\u003c) from a caller's json.Marshal, one number form,
	// sorted keys (see lineJSON).
	for _, f := range []struct {
		name string
		raw  *json.RawMessage
	}{{"args", &e.Args}, {"result", &e.Result}, {"authorization_details", &e.AuthorizationDetails}, {"policy", &e.Policy}, {"usage", &e.Usage}} {
		if len(*f.raw) == 0 || inLineForm(*f.raw) {
			continue
		}
		if !json.Valid(*f.raw) {
			return nil, fmt.Errorf("audit: %s is not valid JSON", f.name)
		}
		canon, err := lineJSON(*f.raw)
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", f.name, err)
		}
		*f.raw = canon
	}
	if len(e.Args) > 0 {
		sum, err := ArgsSHA256(e.Args)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		got := hex.EncodeToString(sum[:])
		if e.ArgsSHA256 != "" && e.ArgsSHA256 != got {
			return nil, fmt.Errorf("audit: args_sha256 %s does not match the args (%s)", e.ArgsSHA256, got)
		}
		e.ArgsSHA256 = got
	}
	if e.ArgsRedact || argsStoredEarlier(e) {
		e.Args = nil
	}
	pre, err := prepareEncoding(e, true)
	if err != nil {
		return nil, fmt.Errorf("audit: entry cannot be canonicalized: %w", err)
	}
	return pre, nil
}

// validUTF8Strings replaces each byte of e's strings that is not valid
// UTF-8 with U+FFFD, as encoding/json would when writing the line; done
// here, the line holds the character itself and reads back the same.
// Otherwise the line would hold the escape \ufffd, which decodes to a
// valid string that re-encodes differently, and the entry would never
// verify.
func validUTF8Strings(e *Entry) {
	v := reflect.ValueOf(e).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.String:
			f.SetString(validUTF8(f.String()))
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			for j := range f.Len() {
				f.Index(j).SetString(validUTF8(f.Index(j).String()))
			}
		}
	}
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for an invalid byte, size 1
		i += size
	}
	return b.String()
}

// writer is the single goroutine that commits appends, many per
// transaction (group commit). A batch's COMMIT, and so its fsync, runs on
// a goroutine of its own while the writer seals (chains and signs) the
// next batch onto the head that COMMIT will leave: signing is a third of
// an append's CPU, and the disk wait would leave the cores idle.
func (l *Log) writer() {
	defer close(l.done)
	var fly *inflight
	for {
		select {
		case r := <-l.reqs:
			batch := l.fill(r)
			var s *sealed
			if fly != nil {
				s, _ = l.seal(batch, fly.next) // on failure write seals again and reports it
				l.finish(fly, <-fly.done)
			}
			fly = l.start(batch, s)
		case err := <-fly.committed():
			l.finish(fly, err)
			fly = nil
		case <-l.quit:
			if fly != nil {
				l.finish(fly, <-fly.done)
			}
			for {
				select {
				case r := <-l.reqs:
					if c := l.start(l.fill(r), nil); c != nil {
						l.finish(c, <-c.done)
					}
				default:
					return
				}
			}
		}
	}
}

// fill gathers what else is queued behind r, up to maxBatch.
func (l *Log) fill(r *appendReq) []*appendReq {
	batch := []*appendReq{r}
	for len(batch) < l.maxBatch {
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// sealed is a batch chained and signed onto base.
type sealed struct {
	base Head
	out  []Entry
	sums [][32]byte
}

// seal chains batch onto base and signs every entry, on every core. An
// entry's time is never before the one it follows: the order by time is
// the order by seq, even when servers with skewed clocks share a chain.
func (l *Log) seal(batch []*appendReq, base Head) (*sealed, error) {
	s := &sealed{base: base, out: make([]Entry, len(batch)), sums: make([][32]byte, len(batch))}
	seq, prev, last := base.Seq, base.Hash, base.Time
	for i, r := range batch {
		e := r.e
		seq++
		e.Seq = seq
		e.Time = max(l.now().UTC().Format(TimeFormat), last)
		last = e.Time
		e.PrevHash = hex.EncodeToString(prev[:])
		s.sums[i] = r.pre.hash(prev, e.Seq, e.Time)
		e.Hash = hex.EncodeToString(s.sums[i][:])
		s.out[i] = e
		prev = s.sums[i]
	}
	errs := make([]error, len(batch))
	key := l.current()
	parallel(len(batch), func(i int) {
		sig, err := key.Sign(s.sums[i][:])
		s.out[i].Sig, errs[i] = encodeSig(sig), err
	})
	for _, err := range errs {
		if err != nil {
			return nil, err // one is enough: a failing signer fails them all alike
		}
	}
	return s, nil
}

// inflight is a batch whose transaction is written and whose COMMIT runs.
type inflight struct {
	batch []*appendReq
	out   []Entry
	next  Head // the head once it commits
	done  <-chan error
}

// committed is ready once c's COMMIT returned; never, for no c.
func (c *inflight) committed() <-chan error {
	if c == nil {
		return nil
	}
	return c.done
}

// finish answers c's appends with what its COMMIT returned.
func (l *Log) finish(c *inflight, err error) {
	if err != nil {
		err = fmt.Errorf("audit: append: commit: %w", err)
	}
	l.wrote(err)
	for i, r := range c.batch {
		if err != nil {
			r.done <- appendResult{err: err}
		} else {
			r.done <- appendResult{e: c.out[i]}
		}
	}
}

// start writes batch in a transaction, using s if it was sealed onto the
// head the transaction finds (and sealing it again if not: the last
// COMMIT failed, or another process appended), and starts its COMMIT. A
// failure before COMMIT answers the batch at once and returns nil.
func (l *Log) start(batch []*appendReq, s *sealed) *inflight {
	c, err := l.write(batch, s)
	if err != nil {
		l.wrote(err)
		for _, r := range batch {
			r.done <- appendResult{err: err}
		}
		return nil
	}
	return c
}

func (l *Log) write(batch []*appendReq, s *sealed) (*inflight, error) {
	c := &inflight{batch: batch}
	done, err := l.backend.Write(func(h Head, stored tlog.HashReader) (*Batch, error) {
		if s == nil || s.base.Seq != h.Seq || s.base.Hash != h.Hash {
			var err error
			if s, err = l.seal(batch, h); err != nil {
				return nil, err
			}
		}
		b, err := l.batchOf(s, batch, h, stored)
		if err != nil {
			return nil, err
		}
		c.out, c.next = s.out, b.Head
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	c.done = done
	return c, nil
}

// Since returns up to limit entries after seq (limit <= 0 means 1000), in
// order. Poll it to follow the log.
func (l *Log) Since(ctx context.Context, seq int64, limit int) ([]Entry, error) {
	if limit <= 0 {
		limit = 1000
	}
	return l.read(ctx, fmt.Sprintf("seq after %d", seq), `SELECT body FROM audit_entries WHERE seq > ? ORDER BY seq LIMIT ?`, seq, limit)
}

// read decodes the entries whose bodies query selects; what names them
// in the error of one that does not decode.
func (l *Log) read(ctx context.Context, what, query string, args ...any) ([]Entry, error) {
	rows, err := l.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		var e Entry
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", what, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	return out, nil
}

// LastSeq is the seq of the newest stored entry, 0 for an empty log.
func (l *Log) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_entries`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("audit: read: %w", err)
	}
	return seq, nil
}

// Close stops accepting appends, commits those already queued, writes a
// final checkpoint and stops the background work. It does not close the
// database.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.quit)
	l.mu.Unlock()
	<-l.done
	<-l.bgDone
	defer l.backend.Close()
	if l.broken != nil {
		return nil
	}
	_, err := l.Checkpoint(context.Background())
	return err
}

func (l *Log) checkpointLoop(every time.Duration) {
	defer close(l.bgDone)
	l.CheckpointLoop(context.Background(), every)
}

// CheckpointLoop writes a checkpoint every interval whenever entries were
// added since the last one, until ctx ends or the log closes. Each
// checkpoint is committed before the next step, so whoever reads it after
// (a witness) reads a stored one.
func (l *Log) CheckpointLoop(ctx context.Context, every time.Duration) {
	if l.broken != nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := l.Checkpoint(context.Background()); err != nil {
				l.log.Error("audit checkpoint failed", "err", err)
			}
		}
	}
}
