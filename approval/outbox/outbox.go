package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/approval/watch"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// Outbox is where a Service writes its audit entries, inside the
// transaction that changes what they describe, to be appended to the log
// right after the commit (Flush) in the order they were queued. The
// tables (approval_outbox, approval_logged_assertions) are package
// approval's.
type Outbox struct {
	db        *store.DB
	rec       Recorder
	owner     string        // this process
	owners    *store.Owners // tells the other owners dead or alive (owner.go)
	now       func() time.Time
	log       *slog.Logger
	linkGrant func(ctx context.Context, e *audit.Entry) error

	mu       sync.Mutex     // one Flush at a time
	appended []appended     // in the log, not yet deleted from the outbox (under mu)
	settling sync.WaitGroup // the deletes Append left running
	unsure   map[int64]bool // own entries whose failed append may have landed; under mu
}

// Recorder appends entries to the audit log (*audit.Log).
type Recorder interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Config is what an Outbox needs. LinkGrant fills a grant.revoked entry's
// GrantSeq (the seq of the approval that created the grant).
type Config struct {
	DB        *store.DB
	Recorder  Recorder
	Owner     string
	Owners    *store.Owners
	Now       func() time.Time
	Logger    *slog.Logger
	LinkGrant func(ctx context.Context, e *audit.Entry) error
}

// New returns the outbox of owner.
func New(c Config) *Outbox {
	return &Outbox{db: c.DB, rec: c.Recorder, owner: c.Owner, owners: c.Owners, now: c.Now, log: c.Logger, linkGrant: c.LinkGrant,
		unsure: map[int64]bool{}}
}

// ErrRecord is returned when the audit log append failed.
var ErrRecord = errors.New("approval: audit log append failed")

// StaleAfter is how long another process's unflushed entries wait
// before this one appends them (that process probably died).
const StaleAfter = 30 * time.Second

// Enqueue adds an audit entry to the outbox inside tx, and announces the
// change to the other replicas with it (watch.Announce): a transaction
// that queues an entry changed what it describes.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, requestID string, e audit.Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	// Written in this owner's name: not once another replica has taken
	// it over (store.Owners.Unfenced).
	if err := o.owners.Unfenced(ctx, tx, o.owner); err != nil {
		return err
	}
	created := o.now().UnixNano()
	if requestID == "" {
		_, err = tx.ExecContext(ctx, `INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at) VALUES (?, ?, ?, ?, ?)`,
			requestID, b, string(e.Kind), o.owner, created)
		if err != nil {
			return err
		}
		return watch.Announce(ctx, o.db, tx, requestID)
	}
	// The log keeps each request's entries in the order they were queued
	// (approval.requested first): while another owner's entries for it
	// wait, this one must not overtake them. One statement checks and
	// inserts (a round trip less on the decision's path).
	blob := "BLOB"
	if o.db.Dialect() == store.PostgreSQL {
		blob = "BYTEA"
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO approval_outbox (request_id, entry, kind, owner, created_at)
		SELECT ?, CAST(? AS `+blob+`), ?, ?, CAST(? AS BIGINT)
		WHERE NOT EXISTS (SELECT 1 FROM approval_outbox WHERE request_id = ? AND owner <> ?)`,
		requestID, b, string(e.Kind), o.owner, created, requestID, o.owner)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return store.Retry(errEntriesAhead)
	}
	return watch.Announce(ctx, o.db, tx, requestID)
}

// Flush appends outbox entries to the log in order, deleting them once
// they are appended. With stale, it also takes the entries of other
// processes that are gone: at once those of a dead owner, after
// StaleAfter those of an owner that held no liveness lock; never a live
// one's, which appends its own (taking them by age would append them
// twice).
func (o *Outbox) Flush(ctx context.Context, stale bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.appendAll(ctx, stale); err != nil {
		return err
	}
	return o.settle(ctx)
}

// Append is Flush of this owner's entries for a caller that needs them in
// the log but not out of the outbox (an outcome, before its result is
// returned): it returns once they are appended, and deletes them after,
// still holding the lock, so that no Flush here appends them again
// meanwhile. A delete that fails is tried again by the next Flush, before
// it appends anything.
func (o *Outbox) Append(ctx context.Context) error {
	o.mu.Lock()
	if err := o.appendAll(ctx, false); err != nil {
		o.mu.Unlock()
		return err
	}
	if len(o.appended) == 0 {
		o.mu.Unlock()
		return nil
	}
	o.settling.Add(1)
	go func() {
		defer o.settling.Done()
		defer o.mu.Unlock()
		if err := o.settle(context.WithoutCancel(ctx)); err != nil {
			o.log.Warn("approval: appended entries stay in the outbox until the next flush", "err", err)
		}
	}()
	return nil
}

// Wait returns once the deletes Append left running are done.
func (o *Outbox) Wait() { o.settling.Wait() }

// appended is an outbox entry in the log and not yet deleted from the
// outbox.
type appended struct {
	id, seq             int64
	request             string
	assertion           bool // an approval.assertion: its seq is kept
	requestID, approver string
}

// settleEvery bounds how many appended entries wait for their delete: a
// long flush (a dead owner's leftovers) deletes as it goes.
const settleEvery = 64

// appendAll appends what Flush would, leaving each entry in o.appended.
// Entries appended before a failure are deleted before it returns. It
// first deletes what an earlier flush appended and could not delete:
// until then it appends nothing.
func (o *Outbox) appendAll(ctx context.Context, stale bool) error {
	if err := o.settle(ctx); err != nil {
		return err
	}
	where, args := `WHERE owner = ?`, []any{o.owner}
	if stale {
		where, args = ``, nil
	}
	rows, err := o.db.QueryContext(ctx, `SELECT id, request_id, entry, owner, created_at FROM approval_outbox `+where+` ORDER BY id`, args...)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	type item struct {
		id      int64
		request string
		entry   []byte
		owner   string
		created int64
	}
	var items []item
	for rows.Next() {
		var it item
		if err := rows.Scan(&it.id, &it.request, &it.entry, &it.owner, &it.created); err != nil {
			rows.Close()
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
		items = append(items, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	if stale {
		l, cutoff := o.Liveness(), o.now().Add(-StaleAfter).UnixNano()
		items = slices.DeleteFunc(items, func(it item) bool {
			return l.Live(it.owner) && it.owner != o.owner || !l.IsListed(it.owner) && it.created >= cutoff
		})
	}
	// The seqs of the assertions this pass appended, by request and
	// approver, for the approval.approved entries after them.
	seqs := map[[2]string]int64{}
	fail := func(err error) error {
		return errors.Join(err, o.settle(context.WithoutCancel(ctx)))
	}
	for _, it := range items {
		var e audit.Entry
		if err := json.Unmarshal(it.entry, &e); err != nil {
			return fail(fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err))
		}
		if e.Kind == vocab.KindApprovalApproved {
			if err := o.linkAssertions(ctx, &e, seqs); err != nil {
				return fail(fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err))
			}
		}
		if e.Kind == vocab.KindGrantRevoked && e.GrantSeq == 0 {
			if err := o.linkGrant(ctx, &e); err != nil {
				return fail(fmt.Errorf("%w: outbox entry %d: %v", ErrRecord, it.id, err))
			}
		}
		// Another process may have appended it and died before deleting it.
		var logged audit.Entry
		found := false
		if it.owner != o.owner {
			// Replicas flush what dead owners left at once: one takes
			// each entry over, so only it appends it.
			took, err := o.takeOver(ctx, it.id, it.owner)
			if err != nil {
				return fail(fmt.Errorf("%w: %v", ErrRecord, err))
			}
			if !took {
				continue
			}
		}
		// So may an earlier Flush here whose append failed: a commit cut
		// short (the database stopped) lands the entry and reports an error.
		if it.owner != o.owner || o.unsure[it.id] {
			if logged, found, err = o.inLog(ctx, e, it.created); err != nil {
				return fail(fmt.Errorf("%w: %v", ErrRecord, err))
			}
		}
		if found {
			o.log.Info("approval: an outbox entry was already in the log", "kind", e.Kind, "request", e.RequestID, "seq", logged.Seq)
		} else if logged, err = o.rec.Append(ctx, e); err != nil {
			o.unsure[it.id] = true
			return fail(fmt.Errorf("%w: %v", ErrRecord, err))
		}
		a := appended{id: it.id, seq: logged.Seq, request: it.request}
		if e.Kind == vocab.KindApprovalAssertion {
			a.assertion, a.requestID, a.approver = true, e.RequestID, e.Approver
			seqs[[2]string{e.RequestID, e.Approver}] = logged.Seq
		}
		o.appended = append(o.appended, a)
		if len(o.appended) >= settleEvery {
			if err := o.settle(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle deletes the appended entries from the outbox, in one
// transaction, keeping the seqs of the assertions among them. A crash
// before it commits leaves the entries to the next process, which finds
// them in the log (inLog) rather than appending them again; a failure
// here keeps them in o.appended for the next flush of this process, which
// appends none again. The transaction only writes what the appends
// returned, so running it again is the same.
func (o *Outbox) settle(ctx context.Context) error {
	if len(o.appended) == 0 {
		return nil
	}
	err := o.db.InTx(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		ids := make([]string, len(o.appended))
		args := make([]any, len(o.appended))
		var announced []string
		for i, a := range o.appended {
			if a.assertion {
				if _, err := tx.ExecContext(ctx, `INSERT INTO approval_logged_assertions (request_id, approver_id, seq) VALUES (?,?,?)
					ON CONFLICT (request_id, approver_id) DO UPDATE SET seq = excluded.seq`,
					a.requestID, a.approver, a.seq); err != nil {
					return err
				}
			}
			ids[i], args[i] = "?", a.id
			if !slices.Contains(announced, a.request) {
				announced = append(announced, a.request)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM approval_outbox WHERE id IN (`+strings.Join(ids, ", ")+`)`, args...); err != nil {
			return err
		}
		// Logged, what the entries describe counts now (an approval, a
		// grant): the replicas that heard of the change read it again.
		for _, id := range announced {
			if err := watch.Announce(ctx, o.db, tx, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Kept in o.appended: the next flush deletes them before it
		// appends anything.
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	for _, a := range o.appended {
		delete(o.unsure, a.id)
	}
	o.appended = o.appended[:0]
	return nil
}

// takeOver makes outbox entry id, left by owner, this Outbox's, unless
// another process took it first (then it reports false).
func (o *Outbox) takeOver(ctx context.Context, id int64, owner string) (bool, error) {
	var n int64
	err := o.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := o.owners.Unfenced(ctx, tx, o.owner); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE approval_outbox SET owner = ? WHERE id = ? AND owner = ?`, o.owner, id, owner)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n == 1, err
}

// linkAssertions fills an approval.approved entry's Assertions with the
// seqs of its approvers' approval.assertion entries. The outbox appends in
// order, so they are in the log by now: in seqs, when this flush appended
// them.
func (o *Outbox) linkAssertions(ctx context.Context, e *audit.Entry, seqs map[[2]string]int64) error {
	e.Assertions = nil
	for _, a := range e.Approvers {
		if seq, ok := seqs[[2]string{e.RequestID, a}]; ok {
			e.Assertions = append(e.Assertions, seq)
			continue
		}
		var seq int64
		err := o.db.QueryRowContext(ctx, `SELECT seq FROM approval_logged_assertions WHERE request_id = ? AND approver_id = ?`, e.RequestID, a).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			// Appended before seqs were recorded (by an older server,
			// for a request decided across the upgrade): find it in the
			// log itself.
			seq, err = o.findAssertion(ctx, e.RequestID, a)
		}
		if err != nil {
			return fmt.Errorf("the approval.assertion of %s for request %s: %w", a, e.RequestID, err)
		}
		e.Assertions = append(e.Assertions, seq)
	}
	return nil
}

// logReader is the part of *audit.Log that findAssertion reads with.
type logReader interface {
	Since(ctx context.Context, seq int64, limit int) ([]audit.Entry, error)
}

// findAssertion scans the log for the latest approval.assertion of
// approver on request. It is slow and rarely needed.
func (o *Outbox) findAssertion(ctx context.Context, request, approver string) (int64, error) {
	lr, ok := o.rec.(logReader)
	if !ok {
		return 0, errors.New("not recorded, and the log cannot be searched")
	}
	var found, after int64
	for {
		page, err := lr.Since(ctx, after, 1000)
		if err != nil {
			return 0, err
		}
		for _, e := range page {
			if e.Kind == vocab.KindApprovalAssertion && e.RequestID == request && e.Approver == approver {
				found = e.Seq
			}
			after = e.Seq
		}
		if len(page) < 1000 {
			break
		}
	}
	if found == 0 {
		return 0, errors.New("not in the log")
	}
	return found, nil
}

// Record appends an entry that changes no state (a rejected assertion).
func (o *Outbox) Record(ctx context.Context, e audit.Entry) error {
	if _, err := o.rec.Append(context.WithoutCancel(ctx), e); err != nil {
		o.log.Error("approval: audit append failed", "kind", e.Kind, "err", err)
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	return nil
}

// errEntriesAhead refuses to queue an entry for a request while another
// owner's entries for it are still in the outbox; marked store.Retry,
// the transaction runs again after a pause (a live owner appends them
// right after its commit; a dead one's wait for a restart or the reaper).
var errEntriesAhead = errors.New("approval: another process's audit entries for this request are not appended yet")
