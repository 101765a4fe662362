package audit

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// How the log sits in SQLite: the chain's head, the writer's prepared
// statements and the readers of stored tree hashes.

// head is the chain's end as stored.
type head struct {
	seq      int64
	hash     [32]byte
	treeSize int64 // stored tree hashes
	cpSize   int64 // largest checkpointed size
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// headQuery reads the chain's end in one statement: the writer runs it on
// every commit, and each statement costs a parse unless prepared.
const headQuery = `SELECT
	COALESCE((SELECT seq FROM audit_entries ORDER BY seq DESC LIMIT 1), 0),
	COALESCE((SELECT hash FROM audit_entries ORDER BY seq DESC LIMIT 1), ''),
	(SELECT COALESCE(MAX(idx)+1, 0) FROM audit_tree),
	(SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints)`

func readHead(ctx context.Context, q querier) (head, error) {
	return scanHead(q.QueryRowContext(ctx, headQuery))
}

func scanHead(row *sql.Row) (head, error) {
	var h head
	var hashHex string
	if err := row.Scan(&h.seq, &hashHex, &h.treeSize, &h.cpSize); err != nil {
		return h, err
	}
	if h.seq > 0 {
		var err error
		if h.hash, err = decodeHash(hashHex); err != nil {
			return h, &TamperError{h.seq, "stored hash " + err.Error()}
		}
	}
	return h, nil
}

// writerStmts are the writer's statements, parsed once: parsing SQL was
// a fifth of an append's CPU.
type writerStmts struct {
	head     *sql.Stmt // headQuery
	tree     *sql.Stmt // SELECT hash FROM audit_tree WHERE idx = ?
	entries  *inserter
	treeRows *inserter
}

func prepareWriter(ctx context.Context, db *sql.DB) (*writerStmts, error) {
	w := &writerStmts{
		entries:  &inserter{db: db, prefix: `INSERT INTO audit_entries (seq, hash, body) VALUES `, width: 3},
		treeRows: &inserter{db: db, prefix: `INSERT INTO audit_tree (idx, hash) VALUES `, width: 2},
	}
	var err error
	if w.head, err = db.PrepareContext(ctx, headQuery); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if w.tree, err = db.PrepareContext(ctx, `SELECT hash FROM audit_tree WHERE idx = ?`); err != nil {
		w.head.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	// Prepared now, not on first use: the writer holds the write lock
	// when it needs them, and preparing on the database takes a second
	// connection.
	for _, in := range []*inserter{w.entries, w.treeRows} {
		in.byRows = map[int]*sql.Stmt{}
		for n := 1; n <= maxCachedWidth; n++ {
			st, err := db.PrepareContext(ctx, in.query(n))
			if err != nil {
				w.close()
				return nil, fmt.Errorf("audit: %w", err)
			}
			in.byRows[n] = st
		}
	}
	return w, nil
}

func (w *writerStmts) close() {
	for _, st := range []*sql.Stmt{w.head, w.tree} {
		if st != nil {
			st.Close()
		}
	}
	w.entries.close()
	w.treeRows.close()
}

// An inserter inserts rows of width columns with multi-row INSERTs, far
// cheaper per row than one statement each, keeping the statements for
// the small row counts a commit group usually has.
type inserter struct {
	db     *sql.DB
	prefix string
	width  int
	byRows map[int]*sql.Stmt
}

const (
	rowsPerInsert  = 200
	maxCachedWidth = 32 // row counts above this are rare enough to parse each time
)

func (in *inserter) exec(ctx context.Context, tx *sql.Tx, args []any) error {
	for len(args) > 0 {
		n := min(len(args)/in.width, rowsPerInsert)
		var err error
		if stmt, ok := in.byRows[n]; ok {
			_, err = tx.StmtContext(ctx, stmt).ExecContext(ctx, args[:n*in.width]...)
		} else {
			_, err = tx.ExecContext(ctx, in.query(n), args[:n*in.width]...)
		}
		if err != nil {
			return err
		}
		args = args[n*in.width:]
	}
	return nil
}

func (in *inserter) query(n int) string {
	tuple := "(?" + strings.Repeat(", ?", in.width-1) + ")"
	return in.prefix + tuple + strings.Repeat(", "+tuple, n-1)
}

func (in *inserter) close() {
	for _, st := range in.byRows {
		st.Close()
	}
}

// maxCachedHashes bounds the writer's memory of stored tree hashes.
const maxCachedHashes = 1 << 16

// txHashReader reads stored tree hashes inside the write transaction,
// preferring those the writer already knows (committed earlier, so never
// different).
type txHashReader struct {
	ctx    context.Context
	tx     *sql.Tx
	stmt   *sql.Stmt
	shared *sql.Stmt // prepared on the database once; nil: prepare here
	known  map[int64]tlog.Hash
}

func (r *txHashReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if h, ok := r.known[x]; ok {
			out[i] = h
			continue
		}
		if r.stmt == nil {
			var err error
			if r.shared != nil {
				r.stmt = r.tx.StmtContext(r.ctx, r.shared)
			} else if r.stmt, err = r.tx.PrepareContext(r.ctx, `SELECT hash FROM audit_tree WHERE idx = ?`); err != nil {
				return nil, err
			}
		}
		var b []byte
		if err := r.stmt.QueryRowContext(r.ctx, x).Scan(&b); err != nil {
			return nil, fmt.Errorf("tree hash %d: %w", x, err)
		}
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("tree hash %d: %d bytes", x, len(b))
		}
		copy(out[i][:], b)
		if r.known != nil {
			r.known[x] = out[i] // committed before this transaction began
		}
	}
	return out, nil
}

func (r *txHashReader) close() {
	if r.stmt != nil {
		r.stmt.Close()
	}
}

// dbHashReader reads stored tree hashes, which never change once written.
type dbHashReader struct {
	ctx context.Context
	q   querier
}

func (r dbHashReader) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		var b []byte
		if err := r.q.QueryRowContext(r.ctx, `SELECT hash FROM audit_tree WHERE idx = ?`, x).Scan(&b); err != nil {
			return nil, fmt.Errorf("tree hash %d: %w", x, err)
		}
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("tree hash %d: %d bytes", x, len(b))
		}
		copy(out[i][:], b)
	}
	return out, nil
}
