package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// RoutineTasks keep the MCP tasks of routine calls (package server): a
// call made as a task that ran at once, whose task and result a client
// may read for a while after, from whichever replica its next request
// reaches. The task and result are kept as the JSON the server answers
// with; an agent reads only its own.
type RoutineTasks struct{ db *DB }

// RoutineTask is one kept task.
type RoutineTask struct {
	ID, Agent    string
	At           time.Time // when it was created
	Task, Result []byte    // JSON
}

func routineTasksSchema(d Dialect) []string {
	if d == PostgreSQL {
		return []string{`CREATE TABLE IF NOT EXISTS routine_tasks (
	seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- the order they were kept in
	id     TEXT NOT NULL UNIQUE,
	agent  TEXT NOT NULL,
	at     BIGINT NOT NULL, -- unix milliseconds
	task   BYTEA NOT NULL,
	result BYTEA NOT NULL)`,
			`CREATE INDEX IF NOT EXISTS routine_tasks_agent ON routine_tasks (agent, at)`}
	}
	return []string{`CREATE TABLE IF NOT EXISTS routine_tasks (
	seq    INTEGER PRIMARY KEY, -- the order they were kept in
	id     TEXT NOT NULL UNIQUE,
	agent  TEXT NOT NULL,
	at     INTEGER NOT NULL, -- unix milliseconds
	task   BLOB NOT NULL,
	result BLOB NOT NULL
) STRICT`,
		`CREATE INDEX IF NOT EXISTS routine_tasks_agent ON routine_tasks (agent, at)`}
}

// OpenRoutineTasks creates the table if needed.
func OpenRoutineTasks(ctx context.Context, db *DB) (*RoutineTasks, error) {
	for _, q := range routineTasksSchema(db.Dialect()) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("store: routine tasks: %w", err)
		}
	}
	return &RoutineTasks{db: db}, nil
}

// KeepRoutineTask stores t, and forgets the tasks created before
// forgetBefore.
func (r *RoutineTasks) KeepRoutineTask(ctx context.Context, t RoutineTask, forgetBefore time.Time) error {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM routine_tasks WHERE at < ?`, forgetBefore.UnixMilli()); err != nil {
		return fmt.Errorf("store: routine tasks: %w", err)
	}
	if _, err := r.db.ExecContext(ctx, `INSERT INTO routine_tasks (id, agent, at, task, result) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.Agent, t.At.UnixMilli(), t.Task, t.Result); err != nil {
		return fmt.Errorf("store: routine tasks: %w", err)
	}
	return nil
}

// RoutineTask returns agent's task id if it was created at or after
// since; another agent's task is not found.
func (r *RoutineTasks) RoutineTask(ctx context.Context, agent, id string, since time.Time) (RoutineTask, bool, error) {
	t := RoutineTask{ID: id, Agent: agent}
	var at int64
	err := r.db.QueryRowContext(ctx, `SELECT at, task, result FROM routine_tasks WHERE id = ? AND agent = ? AND at >= ?`,
		id, agent, since.UnixMilli()).Scan(&at, &t.Task, &t.Result)
	if errors.Is(err, sql.ErrNoRows) {
		return RoutineTask{}, false, nil
	}
	if err != nil {
		return RoutineTask{}, false, fmt.Errorf("store: routine tasks: %w", err)
	}
	t.At = time.UnixMilli(at)
	return t, true, nil
}

// RoutineTasksOf returns agent's tasks created at or after since, the
// last kept first, at most limit.
func (r *RoutineTasks) RoutineTasksOf(ctx context.Context, agent string, since time.Time, limit int) ([]RoutineTask, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT id, at, task, result FROM routine_tasks WHERE agent = ? AND at >= ?
		ORDER BY seq DESC LIMIT ?`, agent, since.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("store: routine tasks: %w", err)
	}
	defer rows.Close()
	var out []RoutineTask
	for rows.Next() {
		t := RoutineTask{Agent: agent}
		var at int64
		if err := rows.Scan(&t.ID, &at, &t.Task, &t.Result); err != nil {
			return nil, fmt.Errorf("store: routine tasks: %w", err)
		}
		t.At = time.UnixMilli(at)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: routine tasks: %w", err)
	}
	return out, nil
}
