package page

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/ceremony"
)

// Answers: JSON bodies in and out, and service errors as HTTP statuses.

type apiError struct {
	Error string `json:"error"`
	Check string `json:"check,omitempty"`
}

func writeError(w http.ResponseWriter, status int, check, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: msg, Check: check})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// fail maps a service error to a status and a JSON body.
func (s *server) fail(w http.ResponseWriter, err error) {
	var ce *ceremony.CheckError
	switch {
	case errors.As(err, &ce):
		status := http.StatusForbidden
		if errors.Is(err, approval.ErrNotPending) || errors.Is(err, approval.ErrExpired) {
			status = http.StatusConflict
		}
		if errors.Is(err, ceremony.ErrMalformed) {
			status = http.StatusBadRequest
		}
		writeError(w, status, ce.Check, "refused: "+err.Error())
	case errors.Is(err, approval.ErrNotFound), errors.Is(err, ceremony.ErrEnrollment):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, approval.ErrInvalidRequest):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
	case errors.Is(err, context.Canceled):
		// The browser went away; nobody to answer.
	default:
		s.opts.Logger.Error("approval page", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the server log")
	}
}

// Why a tap could not be recorded, for the approver: a write that failed
// (a full disk) before the decision committed, or after it, when only its
// audit entry waits in the outbox.
const (
	msgNotRecorded = "the audit log cannot be written: nothing was approved"
	msgEntryWaits  = "your decision is stored, but the audit log cannot be written yet: it records the decision as soon as it can"
)

// failDecision is fail for a decision's ceremony (begin, finish, one
// request or a batch): a failure to write is said as such, with whether
// the decision stands, instead of a bare 500.
func (s *server) failDecision(w http.ResponseWriter, err error) {
	var ce *ceremony.CheckError
	switch {
	case errors.As(err, &ce), errors.Is(err, approval.ErrNotFound), errors.Is(err, approval.ErrInvalidRequest), errors.Is(err, context.Canceled):
		s.fail(w, err)
	case errors.Is(err, approval.ErrRecord):
		s.opts.Logger.Error("approval page: decision stored, its audit entry not yet", "err", err)
		writeError(w, http.StatusServiceUnavailable, "not_recorded", msgEntryWaits)
	default:
		s.opts.Logger.Error("approval page: decision not recorded", "err", err)
		writeError(w, http.StatusServiceUnavailable, "not_recorded", msgNotRecorded)
	}
}

// decodeJSON reads a size-limited JSON body into v, strictly.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", mbe.Limit))
		return false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed", "cannot read body")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "malformed", "bad JSON: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed", "bad JSON: trailing data")
		return false
	}
	return true
}
