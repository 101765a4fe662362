package tools

import "errors"

// What a failed Run says about whether the tool acted. A Run error that is
// neither of these is the backend's own answer: the tool ran (or tried)
// and failed, and said so.

// NotSentError is a call that never left for its backend (an upstream not
// connected, a request the transport refused before writing it): nothing
// ran.
type NotSentError struct{ Err error }

func (e *NotSentError) Error() string { return "not sent: " + e.Err.Error() }
func (e *NotSentError) Unwrap() error { return e.Err }

// UnknownOutcomeError is a call that was handed to its backend and whose
// answer never came: the connection was lost, the upstream was told to
// cancel after receiving it, or no answer came within its time. The
// backend may or may not have acted; the guard records the call as
// interrupted, never as failed, and never runs it again.
type UnknownOutcomeError struct{ Err error }

func (e *UnknownOutcomeError) Error() string { return "outcome unknown: " + e.Err.Error() }
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// OutcomeUnknown reports whether err says the backend may have acted
// without its answer arriving.
func OutcomeUnknown(err error) bool {
	var u *UnknownOutcomeError
	return errors.As(err, &u)
}

// NotSent reports whether err says the call never reached its backend.
func NotSent(err error) bool {
	var n *NotSentError
	return errors.As(err, &n)
}
