package audit

import (
	"context"
	"database/sql"
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// A Backend is where a Log commits its chain. The Log chains, signs and
// hashes; the Backend only stores, in one transaction per batch that
// holds the chain's end against every other writer, in this process or
// another. The Log's own backend keeps the chain in a SQLite database
// (Open with no Options.Backend); package auditpg keeps it in
// PostgreSQL, where several servers append to one chain.
type Backend interface {
	// Write commits one batch. It begins a transaction that holds the
	// chain's end against other writers, reads the head and calls seal,
	// which chains the batch onto that head (again, if another writer
	// moved it since the Log last saw it); it stores the entries, their
	// tree rows and the new head seal returns, and starts the COMMIT,
	// whose outcome it sends once on the returned channel. An error,
	// returned or sent, means the batch is not stored.
	Write(seal Sealer) (<-chan error, error)
	// Snapshot begins a read-only transaction that sees the whole log as
	// it was at one moment, whatever others append meanwhile, with the
	// head the backend keeps in it (nil if it keeps none beside the
	// entries).
	Snapshot(ctx context.Context) (*sql.Tx, *Head, error)
	// Close releases what Write holds. The Log closes its backend.
	Close() error
}

// A Sealer chains a batch onto h. stored reads the tree hashes stored
// before the batch, in the batch's transaction; a backend that keeps
// the tree's frontier in its head passes nil and h.Frontier instead, and
// gets the new frontier in the batch's head.
type Sealer func(h Head, stored tlog.HashReader) (*Batch, error)

// Head is the chain's end.
type Head struct {
	Seq  int64
	Hash [32]byte // the hash of entry Seq; zero for the empty log
	Time string   // the time of entry Seq; "" if unknown
	// Frontier is the roots of the complete subtrees on the Merkle
	// tree's right edge, largest first (one per set bit of Seq): all a
	// writer needs of the stored tree to add leaves.
	Frontier []tlog.Hash
}

// Batch is what a backend stores in one transaction.
type Batch struct {
	Entries []StoredEntry
	Tree    []TreeRow // the stored tree hashes the entries add, by index
	Head    Head      // the chain's end after the batch
}

// StoredEntry is one entry as stored.
type StoredEntry struct {
	Seq   int64
	Hash  string // hex, as in the line
	Line  []byte // the entry's line, as exported
	Owner string // whose call the entry is (Options.Owner); not in the line
}

// TreeRow is one stored hash of the Merkle tree (tlog's storage order).
type TreeRow struct {
	Index int64
	Hash  tlog.Hash
}

// FrontierIndexes are the stored-hash indexes of the frontier of a tree
// of n leaves, in Head.Frontier's order.
func FrontierIndexes(n int64) []int64 {
	idx := make([]int64, 0, bits.OnesCount64(uint64(n)))
	var start int64
	for level := 62; level >= 0; level-- {
		if size := int64(1) << level; n&size != 0 {
			idx = append(idx, tlog.StoredHashIndex(level, start>>level))
			start += size
		}
	}
	return idx
}

// batchHashes reads the tree hashes a batch needs: those it adds, then
// the frontier or the stored ones.
type batchHashes struct {
	fresh  map[int64]tlog.Hash
	stored tlog.HashReader // nil: fresh holds the frontier too
}

func (r *batchHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if h, ok := r.fresh[x]; ok {
			out[i] = h
			continue
		}
		if r.stored == nil {
			return nil, fmt.Errorf("tree hash %d is not in the frontier", x)
		}
		h, err := r.stored.ReadHashes([]int64{x})
		if err != nil {
			return nil, err
		}
		out[i] = h[0]
	}
	return out, nil
}

// batchOf is what storing s adds: its entries, their tree rows and the
// new head.
func (l *Log) batchOf(s *sealed, reqs []*appendReq, h Head, stored tlog.HashReader) (*Batch, error) {
	r := &batchHashes{fresh: map[int64]tlog.Hash{}, stored: stored}
	if stored == nil {
		idx := FrontierIndexes(h.Seq)
		if len(h.Frontier) != len(idx) {
			return nil, &TamperError{h.Seq, fmt.Sprintf("the head's frontier has %d hashes, want %d", len(h.Frontier), len(idx))}
		}
		for i, x := range idx {
			r.fresh[x] = h.Frontier[i]
		}
	}
	b := &Batch{Entries: make([]StoredEntry, len(s.out))}
	for i := range s.out {
		e := &s.out[i]
		n := e.Seq - 1
		hashes, err := tlog.StoredHashesForRecordHash(n, LeafHash(s.sums[i]), r)
		if err != nil {
			return nil, fmt.Errorf("audit: append: tree: %w", err)
		}
		base := tlog.StoredHashCount(n)
		for j, th := range hashes {
			r.fresh[base+int64(j)] = th
			b.Tree = append(b.Tree, TreeRow{base + int64(j), th})
		}
		b.Entries[i] = StoredEntry{Seq: e.Seq, Hash: e.Hash, Line: reqs[i].pre.line(e), Owner: l.owner}
	}
	last := len(s.out) - 1
	b.Head = Head{Seq: s.out[last].Seq, Hash: s.sums[last], Time: s.out[last].Time}
	if stored == nil {
		var err error
		if b.Head.Frontier, err = r.ReadHashes(FrontierIndexes(b.Head.Seq)); err != nil {
			return nil, fmt.Errorf("audit: append: tree: %w", err)
		}
	}
	return b, nil
}

// sqliteBackend keeps the chain in SQLite, whose write lock (BEGIN
// IMMEDIATE, see store) holds the chain's end: the head is the last
// entry, and the tree's hashes are read from audit_tree.
type sqliteBackend struct {
	db    *sql.DB
	stmts *writerStmts
	// Used by the single writer only. Stored tree hashes never change
	// once written, so remembering them is always right; it spares the
	// writer the O(log n) reads of the tree's frontier on every append.
	hashes map[int64]tlog.Hash
}

func newSQLiteBackend(ctx context.Context, db *sql.DB) (*sqliteBackend, error) {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("audit: create tables: %w", err)
	}
	stmts, err := prepareWriter(ctx, db)
	if err != nil {
		return nil, err
	}
	return &sqliteBackend{db: db, stmts: stmts}, nil
}

func (b *sqliteBackend) Snapshot(ctx context.Context) (*sql.Tx, *Head, error) {
	// A read transaction: a consistent snapshot (WAL) even while another
	// process appends, without holding the write lock.
	tx, err := b.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	return tx, nil, err
}

func (b *sqliteBackend) Close() error {
	b.stmts.close()
	return nil
}

func (b *sqliteBackend) Write(seal Sealer) (<-chan error, error) {
	ctx := context.Background()
	// The store opens transactions with BEGIN IMMEDIATE, so the head read
	// below cannot be overtaken by another process's append.
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("audit: append: %w", err)
	}
	committing := false
	defer func() {
		if !committing {
			tx.Rollback()
		}
	}()
	h, err := scanHead(tx.StmtContext(ctx, b.stmts.head).QueryRowContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("audit: append: %w", err)
	}
	if h.treeSize != tlog.StoredHashCount(h.seq) {
		return nil, &TamperError{h.seq, fmt.Sprintf("tree has %d stored hashes, want %d", h.treeSize, tlog.StoredHashCount(h.seq))}
	}
	if h.cpSize > h.seq {
		return nil, &TamperError{h.seq + 1, fmt.Sprintf("missing: a checkpoint covers %d entries, the log ends at %d", h.cpSize, h.seq)}
	}
	if b.hashes == nil || len(b.hashes) > maxCachedHashes {
		b.hashes = map[int64]tlog.Hash{} // a restart of the cache costs a few reads
	}
	reader := &txHashReader{ctx: ctx, tx: tx, known: b.hashes, shared: b.stmts.tree}
	defer func() {
		if !committing {
			reader.close()
		}
	}()
	batch, err := seal(Head{Seq: h.seq, Hash: h.hash}, reader)
	if err != nil {
		return nil, err
	}
	treeRows := make([]any, 0, 2*len(batch.Tree))
	for _, t := range batch.Tree {
		treeRows = append(treeRows, t.Index, t.Hash[:])
	}
	entryRows := make([]any, 0, 3*len(batch.Entries))
	for _, e := range batch.Entries {
		entryRows = append(entryRows, e.Seq, e.Hash, e.Line)
	}
	if err := b.stmts.entries.exec(ctx, tx, entryRows); err != nil {
		return nil, fmt.Errorf("audit: append: %w", err)
	}
	if err := b.stmts.treeRows.exec(ctx, tx, treeRows); err != nil {
		return nil, fmt.Errorf("audit: append: %w", err)
	}
	committing = true
	done := make(chan error, 1)
	go func() {
		err := tx.Commit()
		if err == nil {
			// The writer waits for this before its next Write: the
			// cache is not shared meanwhile.
			for _, t := range batch.Tree {
				b.hashes[t.Index] = t.Hash
			}
		}
		reader.close()
		done <- err
	}()
	return done, nil
}
