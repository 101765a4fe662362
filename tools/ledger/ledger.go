// Package ledger is the money backend behind the transfer tools: accounts
// with balances, counterparties (payees) and transfers, kept in the shared
// SQLite database in tables prefixed ledger_.
//
// Money is an int64 count of the currency's minor units (cents for USD,
// yen for JPY, fils for BHD; see [MinorUnits]); text in major units is
// parsed exactly by [ParseAmount], never through a float. A transfer is one
// SQLite transaction that checks funds, debits the account, credits the
// payee and records the transfer, so concurrent transfers can neither
// overdraw an account nor lose money. A transfer that carries an
// idempotency key is recorded with it: a retry with the same key returns
// the first transfer instead of paying twice.
//
// Payees live outside the ledger; what they received is kept per currency
// in ledger_receipts, so the sum of balances and receipts in a currency
// never changes (conservation).
package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/config"
	"github.com/google/uuid"
)

// Errors callers can test with errors.Is.
var (
	ErrUnknownAccount      = errors.New("unknown account")
	ErrCurrencyMismatch    = errors.New("currency does not match the account")
	ErrInsufficientFunds   = errors.New("insufficient funds")
	ErrIdempotencyConflict = errors.New("idempotency key already used for a different transfer")
	ErrInvalidName         = errors.New("invalid counterparty name")
)

// MaxNameLen bounds a counterparty name, in characters.
const MaxNameLen = 100

// Ledger is the money backend. Its methods are safe for concurrent use;
// SQLite serializes the writers.
type Ledger struct {
	db  *store.DB
	now func() time.Time
}

// Account is a ledger account; Balance is in minor units.
type Account struct {
	ID       string
	Name     string
	Currency string
	Balance  int64
}

// Counterparty is a payee. Known means an admin verified it (in config);
// a payee first paid by an agent starts unknown.
type Counterparty struct {
	Name      string
	Known     bool
	FirstSeen time.Time
}

// TransferRequest is one payment to make. Amount is in minor units.
type TransferRequest struct {
	From           string
	To             string
	Currency       string
	Amount         int64
	Memo           string
	IdempotencyKey string
	// CallID is the server's id of the call that pays (see calls.go): one
	// call pays at most once, and after a crash the call's outcome can be
	// looked up by it.
	CallID string
}

// Transfer is a recorded payment.
type Transfer struct {
	Seq            int64 // the order transfers were recorded in; pages of Transfers follow it
	ID             string
	Time           time.Time
	From           string
	To             string // the payee's stored name
	Currency       string
	Amount         int64
	Memo           string
	IdempotencyKey string
	BalanceAfter   int64 // of From, right after this transfer
	NewPayee       bool  // this transfer created the counterparty
	CallID         string
	// Replayed is set when the call repeated an idempotency key and this
	// is the transfer the first call made; nothing was paid this time.
	Replayed bool
}

const schema = `
CREATE TABLE IF NOT EXISTS ledger_accounts (
	id       TEXT PRIMARY KEY,
	name     TEXT NOT NULL,
	currency TEXT NOT NULL,
	balance  INTEGER NOT NULL CHECK (balance >= 0)
) STRICT;
CREATE TABLE IF NOT EXISTS ledger_counterparties (
	name       TEXT PRIMARY KEY COLLATE NOCASE,
	known      INTEGER NOT NULL,
	first_seen TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS ledger_receipts (
	counterparty TEXT NOT NULL COLLATE NOCASE REFERENCES ledger_counterparties(name),
	currency     TEXT NOT NULL,
	amount       INTEGER NOT NULL CHECK (amount >= 0),
	PRIMARY KEY (counterparty, currency)
) STRICT;
CREATE TABLE IF NOT EXISTS ledger_transfers (
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	id              TEXT NOT NULL UNIQUE,
	time            TEXT NOT NULL,
	from_account    TEXT NOT NULL REFERENCES ledger_accounts(id),
	to_name         TEXT NOT NULL,
	currency        TEXT NOT NULL,
	amount          INTEGER NOT NULL CHECK (amount > 0),
	memo            TEXT NOT NULL,
	idempotency_key TEXT UNIQUE,
	balance_after   INTEGER NOT NULL,
	new_payee       INTEGER NOT NULL
) STRICT;
`

// Open creates the ledger tables if needed and seeds them from config.
// Seeding is idempotent: an account that exists keeps its balance (only its
// display name follows the config), a listed counterparty takes the config's
// known flag and keeps its first-seen time. An existing account whose
// currency differs from the config is an error, because its balance would
// be misread.
func Open(ctx context.Context, db *store.DB, seed config.Ledger) (*Ledger, error) {
	l := &Ledger{db: db, now: time.Now}
	if err := db.CreateTables(ctx, schema); err != nil {
		return nil, fmt.Errorf("ledger: create tables: %w", err)
	}
	if err := l.migrateCalls(ctx); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if err := l.seed(ctx, seed); err != nil {
		return nil, fmt.Errorf("ledger: seed: %w", err)
	}
	return l, nil
}

// Existing returns the ledger that Open made in db, to read from only: it
// creates no table and seeds nothing, so a dry run (policy test) that asks
// it for facts writes nothing.
func Existing(db *store.DB) *Ledger { return &Ledger{db: db, now: time.Now} }

func (l *Ledger) seed(ctx context.Context, seed config.Ledger) error {
	// Re-runnable: what it writes follows from what it reads in tx.
	return l.db.InTx(ctx, func(tx *sql.Tx) error { return l.seedIn(ctx, tx, seed) })
}

func (l *Ledger) seedIn(ctx context.Context, tx *sql.Tx, seed config.Ledger) error {
	for i, a := range seed.Accounts {
		bal, err := ParseBalance(a.Balance, a.Currency)
		if err != nil {
			return fmt.Errorf("ledger.accounts[%d] (%s): balance %q: %w", i, a.ID, a.Balance, err)
		}
		var cur string
		err = tx.QueryRowContext(ctx, `SELECT currency FROM ledger_accounts WHERE id = ?`, a.ID).Scan(&cur)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO ledger_accounts (id, name, currency, balance) VALUES (?, ?, ?, ?)`,
				a.ID, a.Name, a.Currency, bal)
		case err == nil && cur != a.Currency:
			return fmt.Errorf("ledger.accounts[%d] (%s): the database holds this account in %s, the config says %s",
				i, a.ID, cur, a.Currency)
		case err == nil:
			_, err = tx.ExecContext(ctx, `UPDATE ledger_accounts SET name = ? WHERE id = ?`, a.Name, a.ID)
		}
		if err != nil {
			return err
		}
	}
	now := l.now().UTC().Format(time.RFC3339Nano)
	for i, c := range seed.Counterparties {
		name, err := NormalizeName(c.Name)
		if err != nil {
			return fmt.Errorf("ledger.counterparties[%d]: %w", i, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_counterparties (name, known, first_seen) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET known = excluded.known`, name, c.Known, now); err != nil {
			return err
		}
	}
	return nil
}

// NormalizeName returns the canonical form of a payee name: surrounding
// space trimmed and inner runs of space collapsed to one. It refuses empty
// or over-long names and names with control or invisible formatting
// characters (which could make two payees look alike on the approval page).
// Names compare without regard to ASCII case.
func NormalizeName(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return "", fmt.Errorf("%w: contains the control or formatting character %U", ErrInvalidName, r)
		}
	}
	name := strings.Join(strings.Fields(s), " ")
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return "", fmt.Errorf("%w: %d characters, at most %d allowed", ErrInvalidName, n, MaxNameLen)
	}
	return name, nil
}

// Accounts returns every account, ordered by id.
func (l *Ledger) Accounts(ctx context.Context) ([]Account, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT id, name, currency, balance FROM ledger_accounts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []Account
	for rows.Next() {
		var a Account
		if err := rows.Scan(&a.ID, &a.Name, &a.Currency, &a.Balance); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Account returns one account, or an error wrapping ErrUnknownAccount.
func (l *Ledger) Account(ctx context.Context, id string) (Account, error) {
	a := Account{ID: id}
	err := l.db.QueryRowContext(ctx, `SELECT name, currency, balance FROM ledger_accounts WHERE id = ?`, id).
		Scan(&a.Name, &a.Currency, &a.Balance)
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("%w %q", ErrUnknownAccount, id)
	}
	if err != nil {
		return a, fmt.Errorf("ledger: %w", err)
	}
	return a, nil
}

// Counterparty looks a payee up by name (normalized, ASCII case-insensitive).
// ok is false when the ledger has never seen it.
func (l *Ledger) Counterparty(ctx context.Context, name string) (c Counterparty, ok bool, err error) {
	name, err = NormalizeName(name)
	if err != nil {
		return c, false, err
	}
	return scanCounterparty(l.db.QueryRowContext(ctx,
		`SELECT name, known, first_seen FROM ledger_counterparties WHERE name = ?`, name))
}

type rowScanner interface{ Scan(...any) error }

func scanCounterparty(row rowScanner) (c Counterparty, ok bool, err error) {
	var first string
	err = row.Scan(&c.Name, &c.Known, &first)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("ledger: %w", err)
	}
	if c.FirstSeen, err = time.Parse(time.RFC3339Nano, first); err != nil {
		return c, false, fmt.Errorf("ledger: counterparty %q: first_seen: %w", c.Name, err)
	}
	return c, true, nil
}

// Counterparties returns every payee, ordered by name.
func (l *Ledger) Counterparties(ctx context.Context) ([]Counterparty, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT name, known, first_seen FROM ledger_counterparties ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []Counterparty
	for rows.Next() {
		c, _, err := scanCounterparty(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

const transferColumns = `seq, id, time, from_account, to_name, currency, amount, memo, COALESCE(idempotency_key, ''), balance_after, new_payee, COALESCE(call_id, '')`

func scanTransfer(row rowScanner) (Transfer, error) {
	var t Transfer
	var at string
	if err := row.Scan(&t.Seq, &t.ID, &at, &t.From, &t.To, &t.Currency, &t.Amount, &t.Memo, &t.IdempotencyKey,
		&t.BalanceAfter, &t.NewPayee, &t.CallID); err != nil {
		return t, err
	}
	var err error
	if t.Time, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return t, fmt.Errorf("ledger: transfer %s: time: %w", t.ID, err)
	}
	return t, nil
}

// Transfers returns transfers newest first, at most limit of them, starting
// with the newest recorded before seq before (0: the newest of all). The
// Seq of the last one returned is where the next page starts; a transfer
// recorded meanwhile does not shift the pages.
func (l *Ledger) Transfers(ctx context.Context, before int64, limit int) ([]Transfer, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := l.db.QueryContext(ctx, `SELECT `+transferColumns+` FROM ledger_transfers WHERE seq < ? ORDER BY seq DESC LIMIT ?`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []Transfer
	for rows.Next() {
		t, err := scanTransfer(rows)
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Transfer pays req in one transaction: it checks the account and its
// funds, debits it, creates the payee as an unknown counterparty if the
// ledger has never seen it, credits the payee and records the transfer.
// With an idempotency key already used for the same request it returns the
// first transfer (Replayed set) and pays nothing; used for a different
// request it fails with ErrIdempotencyConflict.
func (l *Ledger) Transfer(ctx context.Context, req TransferRequest) (Transfer, error) {
	to, err := NormalizeName(req.To)
	if err != nil {
		return Transfer{}, err
	}
	if req.Amount <= 0 {
		return Transfer{}, amountErr(ErrAmountNotPositive, "must be greater than zero")
	}
	// On SQLite the database was opened with _txlock=immediate: this takes
	// the write lock now, so the funds check and the debit see the same
	// balance. On PostgreSQL the transaction is READ COMMITTED and first
	// locks the paying account's row (FOR UPDATE): transfers from one
	// account take turns, and each statement after the lock sees what the
	// one before it committed (its transfer, the balance it left).
	// SERIALIZABLE would make every transfer from a busy account but one
	// fail and retry. Rows are locked in one order, the account before the
	// payee's receipts, so two transfers cannot deadlock.
	opts := (*sql.TxOptions)(nil)
	if l.db.Dialect() == store.PostgreSQL {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := l.db.BeginTx(ctx, opts)
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: %w", err)
	}
	defer tx.Rollback()
	// The lock is held until the commit: every round trip under it is
	// one more for each transfer queued behind (on PostgreSQL the lock
	// reads the account, and one statement debits, credits and records).
	pg := l.db.Dialect() == store.PostgreSQL
	var currency string
	var balance int64
	var account error
	if pg {
		account = tx.QueryRowContext(ctx, `SELECT currency, balance FROM ledger_accounts WHERE id = ? FOR UPDATE`, req.From).Scan(&currency, &balance)
		if account != nil && !errors.Is(account, sql.ErrNoRows) {
			return Transfer{}, fmt.Errorf("ledger: lock account: %w", account)
		}
	}

	if req.CallID != "" {
		// The same call again (a restart finishing what a crash cut short):
		// its own transfer, not a second payment.
		prev, err := scanTransfer(tx.QueryRowContext(ctx,
			`SELECT `+transferColumns+` FROM ledger_transfers WHERE call_id = ?`, req.CallID))
		switch {
		case err == nil:
			return prev, nil
		case !errors.Is(err, sql.ErrNoRows):
			return Transfer{}, fmt.Errorf("ledger: %w", err)
		}
	}
	if req.IdempotencyKey != "" {
		prev, err := scanTransfer(tx.QueryRowContext(ctx,
			`SELECT `+transferColumns+` FROM ledger_transfers WHERE idempotency_key = ?`, req.IdempotencyKey))
		switch {
		case err == nil:
			if prev.From != req.From || !strings.EqualFold(prev.To, to) || prev.Currency != req.Currency ||
				prev.Amount != req.Amount || prev.Memo != req.Memo {
				return Transfer{}, fmt.Errorf("%w: key %q paid %s to %s from %s in transfer %s",
					ErrIdempotencyConflict, req.IdempotencyKey, FormatHuman(prev.Amount, prev.Currency), prev.To, prev.From, prev.ID)
			}
			prev.Replayed = true
			return prev, nil
		case !errors.Is(err, sql.ErrNoRows):
			return Transfer{}, fmt.Errorf("ledger: %w", err)
		}
	}

	err = account
	if !pg {
		err = tx.QueryRowContext(ctx, `SELECT currency, balance FROM ledger_accounts WHERE id = ?`, req.From).Scan(&currency, &balance)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Transfer{}, fmt.Errorf("%w %q", ErrUnknownAccount, req.From)
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: %w", err)
	}
	if currency != req.Currency {
		return Transfer{}, fmt.Errorf("%w: account %s holds %s, not %s", ErrCurrencyMismatch, req.From, currency, req.Currency)
	}
	if balance < req.Amount {
		return Transfer{}, fmt.Errorf("%w: account %s holds %s, the transfer needs %s", ErrInsufficientFunds,
			req.From, FormatHuman(balance, currency), FormatHuman(req.Amount, currency))
	}
	now := l.now().UTC()
	res, err := tx.ExecContext(ctx, `INSERT INTO ledger_counterparties (name, known, first_seen) VALUES (?, 0, ?)
		ON CONFLICT (name) DO NOTHING`, to, now.Format(time.RFC3339Nano))
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: counterparty: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: counterparty: %w", err)
	}
	// Record the payee under its stored spelling.
	if err := tx.QueryRowContext(ctx, `SELECT name FROM ledger_counterparties WHERE name = ?`, to).Scan(&to); err != nil {
		return Transfer{}, fmt.Errorf("ledger: counterparty: %w", err)
	}
	t := Transfer{
		ID: uuid.NewString(), Time: now, From: req.From, To: to, Currency: currency, Amount: req.Amount,
		Memo: req.Memo, IdempotencyKey: req.IdempotencyKey, BalanceAfter: balance - req.Amount, NewPayee: n == 1,
		CallID: req.CallID,
	}
	var key, callID any
	if t.IdempotencyKey != "" {
		key = t.IdempotencyKey
	}
	if t.CallID != "" {
		callID = t.CallID
	}
	const (
		debit  = `UPDATE ledger_accounts SET balance = balance - ? WHERE id = ?`
		credit = `INSERT INTO ledger_receipts (counterparty, currency, amount) VALUES (?, ?, ?)
		ON CONFLICT (counterparty, currency) DO UPDATE SET amount = ledger_receipts.amount + excluded.amount`
		record = `INSERT INTO ledger_transfers
		(id, time, from_account, to_name, currency, amount, memo, idempotency_key, balance_after, new_payee, call_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	)
	debitArgs := []any{req.Amount, req.From}
	creditArgs := []any{to, currency, req.Amount}
	recordArgs := []any{t.ID, now.Format(time.RFC3339Nano), t.From, t.To, t.Currency, t.Amount, t.Memo, key, t.BalanceAfter, t.NewPayee, callID}
	if pg {
		// Three tables, each row written once: the order within the
		// statement does not matter, and the account is locked already.
		_, err = tx.ExecContext(ctx, `WITH debit AS (`+debit+`), credit AS (`+credit+`) `+record,
			slices.Concat(debitArgs, creditArgs, recordArgs)...)
	} else {
		_, err = tx.ExecContext(ctx, debit, debitArgs...)
		if err == nil {
			_, err = tx.ExecContext(ctx, credit, creditArgs...)
		}
		if err == nil {
			_, err = tx.ExecContext(ctx, record, recordArgs...)
		}
	}
	if err != nil {
		return Transfer{}, fmt.Errorf("ledger: record transfer: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Transfer{}, fmt.Errorf("ledger: commit: %w", err)
	}
	return t, nil
}
