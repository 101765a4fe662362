package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Marks are named positions kept in the database: how far a
// reconciliation has reached, so that the next one starts there. A mark
// only moves forward.
type Marks struct{ DB *DB }

const marksSchema = `CREATE TABLE IF NOT EXISTS store_marks (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) STRICT`

// Mark returns the named mark; ok is false when it was never set.
func (m Marks) Mark(ctx context.Context, name string) (value int64, ok bool, err error) {
	if err := m.DB.CreateTables(ctx, marksSchema); err != nil {
		return 0, false, fmt.Errorf("store: marks: %w", err)
	}
	err = m.DB.QueryRowContext(ctx, `SELECT value FROM store_marks WHERE name = ?`, name).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: mark %s: %w", name, err)
	}
	return value, true, nil
}

// SetMark moves the named mark forward to value (never back).
func (m Marks) SetMark(ctx context.Context, name string, value int64) error {
	if err := m.DB.CreateTables(ctx, marksSchema); err != nil {
		return fmt.Errorf("store: marks: %w", err)
	}
	_, err := m.DB.ExecContext(ctx, `INSERT INTO store_marks (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = CASE WHEN excluded.value > store_marks.value THEN excluded.value ELSE store_marks.value END`, name, value)
	if err != nil {
		return fmt.Errorf("store: mark %s: %w", name, err)
	}
	return nil
}

// ForgetIn deletes the named mark in tx if settled, given its value,
// reports true, and says whether the mark is gone (as it is when it was
// never set). The mark's row is locked until tx ends, so that it does
// not move between settled's look and the delete.
func (m Marks) ForgetIn(ctx context.Context, tx *sql.Tx, name string, settled func(value int64) (bool, error)) (bool, error) {
	if err := m.DB.CreateTables(ctx, marksSchema); err != nil {
		return false, fmt.Errorf("store: marks: %w", err)
	}
	lock := " FOR UPDATE"
	if m.DB.Dialect() != PostgreSQL {
		lock = "" // the transaction holds the file's write lock
	}
	var value int64
	err := tx.QueryRowContext(ctx, `SELECT value FROM store_marks WHERE name = ?`+lock, name).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: mark %s: %w", name, err)
	}
	if ok, err := settled(value); err != nil || !ok {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM store_marks WHERE name = ?`, name); err != nil {
		return false, fmt.Errorf("store: forget mark %s: %w", name, err)
	}
	return true, nil
}
