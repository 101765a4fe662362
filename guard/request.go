package guard

import (
	"github.com/countersign/countersign/approval"
)

// What package server sees of an approval request. The server reaches the
// approval store only through the guard (DESIGN): it reads a waiting call's
// or a task's request under this name; its state is a vocab.State.

// Request is an approval request: a countersigned call waiting for, or
// decided by, its approvers, and a task's state.
type Request = approval.Request

// ErrNoTask is the answer about a task that does not exist, or is another
// agent's (Guard.Task).
var ErrNoTask = approval.ErrNotFound

// Settled reports whether nothing more will happen to r: it was denied,
// expired or cancelled, or its one run ended.
func Settled(r *Request) bool { return approval.Settled(r) }
