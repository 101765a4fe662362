// Package witness keeps the audit log's newest signed checkpoint where the
// database cannot take it along when it is rolled back: in a file on
// another disk (config audit.witness_file), and with C2SP tlog-witnesses
// (audit.witnesses).
//
// The log's hash chain and signatures prove that nothing inside a log was
// changed, but a database file restored from an older copy is a valid log
// too, only shorter: every entry after the copy is gone without a trace on
// the host. A witness remembers how far the log had come. After every
// checkpoint the server writes it to the witness file (atomically: a
// temporary file, fsync, rename); at start, before serving, the log must
// extend the witnessed checkpoint: hold at least as many entries, and the
// Merkle root of its first that-many entries must be the checkpoint's
// root. Otherwise the server refuses to start with a [RollbackError] naming
// both tree sizes, unless the operator accepts the loss (serve
// --accept-rollback), which is itself recorded in the log.
//
// The file holds the checkpoint exactly as the server signed it (a C2SP
// signed note), so anyone with the server's public key can check it. This
// is the simplest witness, one the operator must place on storage the
// database's host cannot roll back together with the database. A [Remote]
// is the fuller form: a C2SP tlog-witness on the network (config
// audit.witnesses) that cosigns each checkpoint and refuses any tree that
// does not extend the ones it saw.
package witness

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Tree is the log as a witness sees it; *audit.Log satisfies it.
type Tree interface {
	LastSeq(ctx context.Context) (int64, error)
	TreeHash(ctx context.Context, n int64) (tlog.Hash, error)
	Checkpoint(ctx context.Context) ([]byte, error)
}

// File is a witness kept in one file.
type File struct {
	Path string
	// Verifier is the server's key: a witnessed checkpoint that does not
	// verify with it is refused.
	Verifier note.Verifier
	// Earlier are the server keys the log had before a rotation (audit
	// rotate-key): the witnessed checkpoint may be signed by one of them,
	// when nothing was recorded since. Record takes only Verifier's.
	Earlier []note.Verifier
}

// Checkpoint is a verified checkpoint.
type Checkpoint struct {
	Size int64
	Root tlog.Hash
	Note []byte // as signed
}

// RollbackError says the log does not extend the witnessed checkpoint.
type RollbackError struct {
	Path      string
	Witnessed int64 // tree size of the witnessed checkpoint
	Log       int64 // entries in the database's log
	Reason    string
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("audit log rolled back: the witness %s holds a checkpoint of tree size %d, and the database's log "+
		"(tree size %d) %s. The database was restored from an older copy or rewritten; the entries after it are gone. "+
		"Start with --accept-rollback to accept that (it is recorded in the log)", e.Path, e.Witnessed, e.Log, e.Reason)
}

// Latest reads the witnessed checkpoint: nil when the file does not exist
// yet (the first start with a witness).
func (f *File) Latest() (*Checkpoint, error) {
	raw, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	cp, err := parse(raw, f.Verifier, f.Earlier...)
	if err != nil {
		return nil, fmt.Errorf("witness %s: %w", f.Path, err)
	}
	return cp, nil
}

// parse verifies a checkpoint note (origin, tree size, base64 root) signed
// by v or one of earlier (the same origin).
func parse(msg []byte, v note.Verifier, earlier ...note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(append([]note.Verifier{v}, earlier...)...))
	if err != nil {
		return nil, fmt.Errorf("checkpoint does not verify with the server key: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		return nil, fmt.Errorf("not a checkpoint of %s", v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("bad tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return nil, fmt.Errorf("bad root hash %q", lines[2])
	}
	cp := &Checkpoint{Size: size, Note: msg}
	copy(cp.Root[:], root)
	return cp, nil
}

// Check reports whether the log extends the witnessed checkpoint; a log
// that does not gets a *RollbackError.
func (f *File) Check(ctx context.Context, t Tree) error {
	cp, err := f.Latest()
	if err != nil || cp == nil {
		return err
	}
	return f.check(ctx, t, cp)
}

// check reports whether the log extends cp, naming f.Path in the error.
func (f *File) check(ctx context.Context, t Tree, cp *Checkpoint) error {
	last, err := t.LastSeq(ctx)
	if err != nil {
		return err
	}
	if last < cp.Size {
		return &RollbackError{Path: f.Path, Witnessed: cp.Size, Log: last,
			Reason: fmt.Sprintf("is %d entries short of it", cp.Size-last)}
	}
	root, err := t.TreeHash(ctx, cp.Size)
	if err != nil {
		return err
	}
	if root != cp.Root {
		return &RollbackError{Path: f.Path, Witnessed: cp.Size, Log: last,
			Reason: fmt.Sprintf("has a different history: the root of its first %d entries is %s, the witness says %s",
				cp.Size, base64.StdEncoding.EncodeToString(root[:]), base64.StdEncoding.EncodeToString(cp.Root[:]))}
	}
	return nil
}

// Record writes the checkpoint msg to the witness if it is newer than the
// one there; with force, whatever is there (after an accepted rollback).
func (f *File) Record(msg []byte, force bool) error {
	cp, err := parse(msg, f.Verifier)
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if !force {
		old, err := f.Latest()
		if err != nil {
			return err
		}
		if old != nil && old.Size >= cp.Size {
			return nil
		}
	}
	return writeAtomic(f.Path, msg)
}

// writeAtomic replaces path with data so that a crash leaves the old file
// or the new one, never a part.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself must reach the disk
		d.Close()
	}
	return nil
}

// Keep records the log's checkpoint every interval until ctx ends, asking
// the log for a new one when entries were added. Failures are reported to
// fail and retried at the next tick: the server keeps serving, but an
// operator must know that rollbacks are no longer caught.
func (f *File) Keep(ctx context.Context, t Tree, every time.Duration, fail func(error)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			msg, err := t.Checkpoint(ctx)
			if err == nil {
				err = f.Record(msg, false)
			}
			if err != nil && ctx.Err() == nil {
				fail(err)
			}
		}
	}
}
