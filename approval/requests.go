package approval

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
)

// NewRequest is what the MCP server asks a human to countersign.
type NewRequest struct {
	Tool  string
	Agent string
	// Args are the validated arguments: exactly what will run.
	Args json.RawMessage
	// AuthorizationDetails is the RFC 9396 array the tool describes the
	// action with; the page is rendered from it, not from agent text.
	AuthorizationDetails json.RawMessage
	// Summary is a short binding text from the tool.
	Summary          string
	Level            string // "high" | "critical"
	Rule             string // rule(s) that raised it
	Approvers        []string
	Quorum           int
	UserVerification string // "required" | "preferred" | "discouraged"; critical is always required
	Timeout          time.Duration
	RedactArgs       bool // audit entries keep only args_sha256
	// Wait is how the call waits: WaitBlock (default), WaitPoll or WaitTask. It
	// decides what a restart does with the request (see Restart).
	Wait string
	// Grant, when set, is the standing grant the approver is offered with
	// this request (grant.go); the server derived it, the page shows it.
	Grant *GrantOffer
	// Batchable lets an approver approve it together with others in one
	// tap (batch.go). Ignored at critical: each critical approval keeps
	// its own tap.
	Batchable bool
}

// Request is a snapshot of one request.
type Request struct {
	ID             string
	Tool, Agent    string
	State          string
	Code           string
	BindingMessage string
	URL            string
	ExpiresAt      time.Time
	Interval       time.Duration
	Approvers      []string
	ApproverNames  []string
	Quorum         int
	Approvals      []string // approver ids counted so far
	DecidedBy      string
	DecidedAt      time.Time
	Reason         string
	// Result is what the run returned, for its agent to collect, while it
	// is kept (results.go); nil before the run and after ResultUntil.
	Result      json.RawMessage
	ResultUntil time.Time // when the result is erased; zero if none was kept
	Wait        string    // WaitBlock | WaitPoll | WaitBackchannel | WaitTask
	Batchable   bool      // may be approved in a batch (batch.go)
	// Running says an approved request's one run was claimed (it is
	// executing, or the process running it died).
	Running bool

	// Shown on the page.
	Level                string
	Display              string
	AuthorizationDetails json.RawMessage
	CreatedAt            time.Time
}

// Terminal reports whether no further decision can change the request.
func (r *Request) Terminal() bool { return r.State != StatePending }

// codeAlphabet has no 0/O, 1/I/L: a human compares it across two screens.
const codeAlphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"

// codeLength is the characters of a code.
const codeLength = 6

func newCode() (string, error) {
	var b strings.Builder
	max := big.NewInt(int64(len(codeAlphabet)))
	for range codeLength {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b.WriteByte(codeAlphabet[n.Int64()])
	}
	return b.String(), nil
}

// Create persists a request and records approval.requested before anything
// can show it.
func (s *Service) Create(ctx context.Context, r NewRequest) (*Request, error) {
	if r.Tool == "" {
		return nil, fmt.Errorf("%w: tool is required", ErrInvalidRequest)
	}
	if r.Agent == "" {
		r.Agent = "anonymous"
	}
	if len(r.Args) == 0 {
		r.Args = json.RawMessage(`{}`)
	}
	argsSum, err := digest.ArgsSHA256(r.Args)
	if err != nil {
		return nil, fmt.Errorf("%w: args: %v", ErrInvalidRequest, err)
	}
	if len(r.AuthorizationDetails) == 0 {
		r.AuthorizationDetails = json.RawMessage(`[]`)
	}
	var details []json.RawMessage
	if err := json.Unmarshal(r.AuthorizationDetails, &details); err != nil {
		return nil, fmt.Errorf("%w: authorization_details must be a JSON array: %v", ErrInvalidRequest, err)
	}
	switch r.Level {
	case "high":
		if r.Quorum <= 0 {
			r.Quorum = 1
		}
	case "critical":
		if r.Quorum <= 0 {
			r.Quorum = 2
		}
		r.UserVerification = "required"
	default:
		return nil, fmt.Errorf("%w: level %q (want high or critical)", ErrInvalidRequest, r.Level)
	}
	switch r.UserVerification {
	case "":
		r.UserVerification = "preferred"
	case "required", "preferred", "discouraged":
	default:
		return nil, fmt.Errorf("%w: user_verification %q", ErrInvalidRequest, r.UserVerification)
	}
	var approvers []string
	for _, id := range r.Approvers {
		if _, ok := s.approvers[id]; !ok {
			return nil, fmt.Errorf("%w: %w %q", ErrInvalidRequest, ErrUnknownApprover, id)
		}
		if !slices.Contains(approvers, id) {
			approvers = append(approvers, id)
		}
	}
	if len(approvers) == 0 {
		return nil, fmt.Errorf("%w: no approvers", ErrInvalidRequest)
	}
	if r.Quorum > len(approvers) {
		return nil, fmt.Errorf("%w: quorum %d exceeds the %d allowed approvers", ErrInvalidRequest, r.Quorum, len(approvers))
	}
	if r.Timeout <= 0 {
		r.Timeout = 5 * time.Minute
	}
	r.Batchable = r.Batchable && r.Level == "high"
	switch r.Wait {
	case "":
		r.Wait = WaitBlock
	case WaitBlock, WaitPoll, WaitBackchannel, WaitTask:
	default:
		return nil, fmt.Errorf("%w: wait %q (want block, poll, backchannel or task)", ErrInvalidRequest, r.Wait)
	}

	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	code, err := newCode()
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	now := s.now()
	expires := now.Add(r.Timeout).Truncate(time.Second)
	summary := clean(r.Summary, 300)
	if summary == "" {
		summary = r.Tool
	}
	binding := summary + " (code " + code + ")"
	display, err := renderDisplay(details, r.Args, r.Tool, r.Agent, code)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	approversJSON, _ := json.Marshal(approvers)

	// The requirement is recorded as fields, so that an auditor can check
	// offline that every approval met it.
	entry := audit.Entry{
		Kind:                 audit.KindApprovalRequested,
		RequestID:            id,
		Agent:                r.Agent,
		Tool:                 r.Tool,
		Level:                r.Level,
		Rule:                 r.Rule,
		Quorum:               r.Quorum,
		Eligible:             approvers,
		UserVerification:     r.UserVerification,
		Batchable:            r.Batchable,
		ArgsSHA256:           hex.EncodeToString(argsSum[:]),
		AuthorizationDetails: r.AuthorizationDetails,
		Display:              display,
		Nonce:                base64.RawURLEncoding.EncodeToString(nonce),
		ExpiresAt:            digest.FormatTime(expires),
		Reason:               fmt.Sprintf("binding message %q", binding),
	}
	if r.RedactArgs {
		entry.ArgsRedact = true
	} else {
		entry.Args = r.Args
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// A frozen agent raises nothing: checked under the write lock, so
		// a freeze committed before this is seen, and one after it finds
		// this request pending and cancels it.
		if f, err := frozenIn(ctx, tx, r.Agent); err != nil || f != nil {
			return errors.Join(err, frozenErr(f))
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO approval_requests
			(id, tool, agent, args, args_sha256, redact_args, authorization_details, summary, display, level, rule,
			 approvers, quorum, user_verification, code, binding_message, nonce, created_at, expires_at, interval_ms, state, wait_mode)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			id, r.Tool, r.Agent, []byte(r.Args), hex.EncodeToString(argsSum[:]), r.RedactArgs, []byte(r.AuthorizationDetails),
			summary, display, r.Level, r.Rule, string(approversJSON), r.Quorum, r.UserVerification, code, binding, nonce,
			now.UnixNano(), expires.Unix(), s.opts.PollInterval.Milliseconds(), StatePending, r.Wait)
		if err != nil {
			return err
		}
		if err := s.offerGrant(ctx, tx, id, r); err != nil {
			return err
		}
		if r.Batchable {
			if err := markBatchable(ctx, tx, id); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, id, entry)
	})
	if err != nil {
		return nil, fmt.Errorf("approval: create: %w", err)
	}
	// The request exists now: whatever happens to the caller, it is
	// recorded and handed back, or ended, never left pending unseen.
	ctx = context.WithoutCancel(ctx)
	if err := s.flush(ctx, false); err != nil {
		// Not recorded, so it must not be decided: end it.
		s.endRequest(ctx, id, StateCancelled, "", "audit log unavailable")
		return nil, err
	}
	s.opts.Logger.Info("approval requested", "id", id, "tool", r.Tool, "agent", r.Agent, "url", s.requestURL(id), "code", code)
	s.notify(id)
	req, err := s.Get(ctx, id)
	if err != nil {
		s.endRequest(ctx, id, StateCancelled, "", "cannot read the request back: "+err.Error())
		return nil, err
	}
	s.announce(EventRequested, req)
	return req, nil
}

func (s *Service) requestURL(id string) string { return s.opts.PublicURL + "/requests/" + id }

// row is a request as stored.
type row struct {
	Request
	args       []byte
	argsSHA256 string
	redact     bool
	summary    string
	rule       string
	uv         string
	nonce      []byte
	expiresSec int64
	execClaim  int64
	lastPoll   int64
	unlogged   bool // outbox entries not yet appended
}

const rowColumns = `id, tool, agent, args, args_sha256, redact_args, authorization_details, summary, display, level, rule,
	approvers, quorum, user_verification, code, binding_message, nonce, created_at, expires_at, interval_ms, state,
	decided_by, decided_at, reason, exec_claimed_at, result, last_poll, wait_mode,
	EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = approval_requests.id),
	EXISTS (SELECT 1 FROM approval_batchable b WHERE b.request_id = approval_requests.id)`

type scanner interface{ Scan(...any) error }

func (s *Service) scanRow(sc scanner) (*row, error) {
	var (
		r                          row
		details, result            []byte
		approvers                  string
		created, decided, interval int64
	)
	err := sc.Scan(&r.ID, &r.Tool, &r.Agent, &r.args, &r.argsSHA256, &r.redact, &details, &r.summary, &r.Display,
		&r.Level, &r.rule, &approvers, &r.Quorum, &r.uv, &r.Code, &r.BindingMessage, &r.nonce, &created,
		&r.expiresSec, &interval, &r.State, &r.DecidedBy, &decided, &r.Reason, &r.execClaim, &result, &r.lastPoll, &r.Wait, &r.unlogged, &r.Batchable)
	if err != nil {
		return nil, err
	}
	r.AuthorizationDetails = details
	if len(result) > 0 {
		r.Result, r.ResultUntil = s.openResult(r.ID, result)
	}
	if err := json.Unmarshal([]byte(approvers), &r.Approvers); err != nil {
		return nil, fmt.Errorf("approval: stored approvers of %s: %w", r.ID, err)
	}
	for _, a := range r.Approvers {
		r.ApproverNames = append(r.ApproverNames, s.approverName(a))
	}
	r.CreatedAt = time.Unix(0, created).UTC()
	r.ExpiresAt = time.Unix(r.expiresSec, 0).UTC()
	r.Interval = time.Duration(interval) * time.Millisecond
	if decided != 0 {
		r.DecidedAt = time.Unix(0, decided).UTC()
	}
	r.URL = s.requestURL(r.ID)
	r.Running = r.State == StateApproved && r.execClaim > 0
	// An approval counts only once the log has it.
	if r.State == StateApproved && r.unlogged {
		r.State = StatePending
	}
	return &r, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *Service) load(ctx context.Context, q querier, id string) (*row, error) {
	r, err := s.scanRow(q.QueryRowContext(ctx, `SELECT `+rowColumns+` FROM approval_requests WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT approver_id FROM approval_votes WHERE request_id = ? AND decision = ? ORDER BY created_at`, id, digest.Approve)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		r.Approvals = append(r.Approvals, a)
	}
	return r, rows.Err()
}

// Get returns a snapshot of the request.
func (s *Service) Get(ctx context.Context, id string) (*Request, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	return &r.Request, nil
}

// list returns requests in the given states, newest first.
func (s *Service) list(ctx context.Context, pending bool, limit int) ([]*Request, error) {
	where := `state = 'pending'`
	order := `expires_at ASC`
	if !pending {
		where = `state <> 'pending'`
		order = `decided_at DESC, created_at DESC`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests WHERE `+where+` ORDER BY `+order+` LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	var out []*Request
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// PendingCount returns how many requests wait for a decision; the page and
// the operator's metrics say so when there are more than a list shows.
func (s *Service) PendingCount(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM approval_requests WHERE state = 'pending'`).Scan(&n)
	return n, err
}

// Wait blocks until the request is approved, denied, expired or cancelled.
// If ctx ends first the request is cancelled (and recorded) unless it was
// already decided.
func (s *Service) Wait(ctx context.Context, id string) (*Request, error) {
	return s.await(ctx, id, true)
}

// Watch is Wait for a watcher that is not the request's caller (the
// server's own poll-mode execution): when ctx ends the request is left as
// it is and ctx's error returned, so that it outlives a shutdown.
func (s *Service) Watch(ctx context.Context, id string) (*Request, error) {
	return s.await(ctx, id, false)
}

func (s *Service) await(ctx context.Context, id string, cancelOnDone bool) (*Request, error) {
	r, err := s.Await(ctx, id, func(r *Request) bool { return r.State != StatePending })
	if err == nil || ctx.Err() == nil || !cancelOnDone {
		return r, err
	}
	err = s.Cancel(context.WithoutCancel(ctx), id, "caller went away: "+context.Cause(ctx).Error())
	if err != nil && !errors.Is(err, ErrNotPending) {
		return nil, err
	}
	got, gerr := s.Get(context.WithoutCancel(ctx), id)
	if gerr != nil {
		return nil, gerr
	}
	if got.State == StatePending {
		// Approved but not yet logged: report what ctx says.
		return got, ctx.Err()
	}
	return got, nil
}

// rereadEvery bounds how long a waiter goes without reading its request.
// This process wakes it at every change it makes, and its expiry loop
// expires requests on time (also by a test clock); the re-read only
// catches a decision made by another process.
const rereadEvery = 5 * time.Second

// Cancel ends a pending request as cancelled. It returns ErrNotPending if
// the request was already decided.
func (s *Service) Cancel(ctx context.Context, id, reason string) error {
	if reason == "" {
		reason = "cancelled"
	}
	return s.endRequest(ctx, id, StateCancelled, "", reason)
}

// expire ends the request if its time is up.
func (s *Service) expire(ctx context.Context, id string) {
	if err := s.endRequest(ctx, id, StateExpired, "", "nobody decided before expires_at"); err != nil && !errors.Is(err, ErrNotPending) {
		s.opts.Logger.Error("approval: expire", "id", id, "err", err)
	}
}

// endRequest moves a pending request to a terminal state without an
// assertion (cancelled, expired), recording it.
func (s *Service) endRequest(ctx context.Context, id, state, by, reason string) error {
	kind := map[string]string{StateCancelled: audit.KindApprovalCancelled, StateExpired: audit.KindApprovalExpired}[state]
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		r, err := s.load(ctx, tx, id)
		if err != nil {
			return err
		}
		cond := ``
		if state == StateExpired {
			cond = ` AND expires_at <= ` + fmt.Sprint(s.now().Unix())
		}
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, decided_by = ?, decided_at = ?, reason = ?
			WHERE id = ? AND state = 'pending'`+cond, state, by, s.now().UnixNano(), reason, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotPending
		}
		return s.enqueue(ctx, tx, id, s.requestEntry(r, kind, reason))
	})
	if err != nil {
		return err
	}
	err = s.flush(ctx, false)
	s.notify(id)
	return err
}

// requestEntry is the audit entry for r with the fields every request
// entry carries.
func (s *Service) requestEntry(r *row, kind, reason string) audit.Entry {
	e := audit.Entry{
		Kind:                 kind,
		RequestID:            r.ID,
		Agent:                r.Agent,
		Tool:                 r.Tool,
		ArgsSHA256:           r.argsSHA256,
		Reason:               reason,
		AuthorizationDetails: r.AuthorizationDetails,
		Display:              r.Display,
		Nonce:                base64.RawURLEncoding.EncodeToString(r.nonce),
		ExpiresAt:            digest.FormatTime(r.ExpiresAt),
	}
	// The args are in the request's approval.requested; this entry
	// finds them through request_id (audit format 3).
	e.ArgsRedact = r.redact
	return e
}

// BeginExecution claims an approved request for its single execution. It
// fails unless the request was approved before it expired, its approval is
// in the audit log, and nobody claimed it before.
func (s *Service) BeginExecution(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET exec_claimed_at = ?
		WHERE id = ? AND state = 'approved' AND exec_claimed_at = 0
		  AND decided_at > 0 AND decided_at < expires_at * 1000000000
		  AND NOT EXISTS (SELECT 1 FROM approval_outbox o WHERE o.request_id = approval_requests.id)
		  AND NOT EXISTS (SELECT 1 FROM agent_freezes f WHERE f.agent IN (approval_requests.agent, '*'))`,
		s.now().UnixNano(), id)
	if err != nil {
		return fmt.Errorf("approval: begin execution: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		r, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		// Approved, then its agent was frozen: it never runs, now or
		// after an unfreeze.
		if f, err := s.Frozen(ctx, r.Agent); err != nil {
			return err
		} else if f != nil && r.State == StateApproved && !r.Running {
			return s.failFrozen(context.WithoutCancel(ctx), id, f)
		}
		return ErrNotApproved
	}
	s.notify(id) // a task's watcher reports the run as started
	return nil
}

// Outcome is how the one run of an approved request ended.
type Outcome struct {
	State  string          // StateExecuted, StateFailed or StateInterrupted
	Result json.RawMessage // what approval_status hands the agent; JSON or empty
	// Note, when set, is added to the request's reason for the approver
	// page (an interruption says so there).
	Note string
	// Record, when its Kind is set, is the audit entry of the run
	// (call.executed, call.failed, call.interrupted). It is written in the
	// same transaction as the state, through the outbox, so a request is
	// never executed without its record, nor recorded twice.
	Record audit.Entry
}

// Finish ends a claimed request with its outcome.
func (s *Service) Finish(ctx context.Context, id string, o Outcome) error {
	switch o.State {
	case StateExecuted, StateFailed, StateInterrupted:
	default:
		return fmt.Errorf("%w: outcome state %q", ErrInvalidRequest, o.State)
	}
	if len(o.Result) > 0 && !json.Valid(o.Result) {
		return fmt.Errorf("%w: result is not JSON", ErrInvalidRequest)
	}
	// Kept sealed, for a while, never in plain text (results.go).
	sealed, err := s.sealResult(id, o.Result, s.now().Add(s.opts.ResultTTL))
	if err != nil {
		return fmt.Errorf("approval: finish: seal result: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE approval_requests SET state = ?, result = ?,
			reason = CASE WHEN ? = '' THEN reason WHEN reason = '' THEN ? ELSE reason || '; ' || ? END
			WHERE id = ? AND state = 'approved' AND exec_claimed_at > 0`,
			o.State, sealed, o.Note, o.Note, o.Note, id)
		if err != nil {
			return fmt.Errorf("approval: finish: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotExecuting
		}
		if o.Record.Kind == "" {
			return nil
		}
		o.Record.RequestID = id
		return s.enqueue(ctx, tx, id, o.Record)
	})
	if errors.Is(err, ErrNotExecuting) {
		if _, gerr := s.Get(ctx, id); gerr != nil {
			return gerr
		}
	}
	if err != nil {
		return err
	}
	err = s.flush(ctx, false)
	s.notify(id)
	return err
}

// PollStatus is a CIBA poll answer.
type PollStatus struct {
	// authorization_pending | slow_down | expired_token | access_denied |
	// approved | executed | failed
	Status  string
	Request *Request
}

// Poll statuses.
const (
	PollPending  = "authorization_pending"
	PollSlowDown = "slow_down"
	PollExpired  = "expired_token"
	PollDenied   = "access_denied"
	PollApproved = "approved"
	PollExecuted = "executed"
	PollFailed   = "failed"
	// PollInterrupted: the server stopped while the request ran; whether
	// it took effect is unknown, and it is not run again.
	PollInterrupted = "interrupted"
)

// SlowDownStep is what CIBA (and RFC 8628) add to the polling interval of
// a client that polled too fast.
const SlowDownStep = 5 * time.Second

// Poll answers a CIBA poll. Only the agent that created the request may
// poll it (others get ErrNotFound); polling faster than Interval gets
// slow_down, and Interval grows by SlowDownStep.
func (s *Service) Poll(ctx context.Context, id, agent string) (*PollStatus, error) {
	r, err := s.load(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	if r.Agent != agent {
		return nil, ErrNotFound
	}
	now := s.now()
	if _, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET last_poll = ? WHERE id = ?`, now.UnixNano(), id); err != nil {
		return nil, err
	}
	if r.State == StatePending && !now.Before(r.ExpiresAt) {
		s.expire(ctx, id)
		if r, err = s.load(ctx, s.db, id); err != nil {
			return nil, err
		}
	}
	st := &PollStatus{Request: &r.Request}
	switch r.State {
	case StatePending:
		st.Status = PollPending
		if r.lastPoll != 0 && now.Sub(time.Unix(0, r.lastPoll)) < r.Interval {
			st.Status = PollSlowDown
			// CIBA: a client told to slow down adds SlowDownStep to its
			// interval for this and every later poll, so from now on the
			// longer interval is the one it must keep.
			r.Interval += SlowDownStep
			if _, err := s.db.ExecContext(ctx, `UPDATE approval_requests SET interval_ms = ? WHERE id = ?`, r.Interval.Milliseconds(), id); err != nil {
				return nil, err
			}
		}
	case StateApproved:
		st.Status = PollApproved
	case StateExpired:
		st.Status = PollExpired
	case StateDenied, StateCancelled:
		st.Status = PollDenied
	case StateExecuted:
		st.Status = PollExecuted
	case StateFailed:
		st.Status = PollFailed
	case StateInterrupted:
		st.Status = PollInterrupted
	default:
		return nil, fmt.Errorf("approval: request %s in unknown state %q", id, r.State)
	}
	return st, nil
}

// expiryLoop expires pending requests whose time is up, whether or not
// anyone waits or looks.
func (s *Service) expiryLoop() {
	defer close(s.done)
	ctx := context.Background()
	for {
		var next sql.NullInt64
		err := s.db.QueryRowContext(ctx, `SELECT MIN(expires_at) FROM approval_requests WHERE state = 'pending'`).Scan(&next)
		if err != nil {
			s.opts.Logger.Error("approval: expiry loop", "err", err)
		}
		wait := time.Second
		if next.Valid {
			if d := time.Unix(next.Int64, 0).Sub(s.now()); d < wait {
				wait = max(d, 0)
			}
		}
		if wait == 0 {
			rows, err := s.db.QueryContext(ctx, `SELECT id FROM approval_requests WHERE state = 'pending' AND expires_at <= ?`, s.now().Unix())
			var ids []string
			if err == nil {
				for rows.Next() {
					var id string
					if rows.Scan(&id) == nil {
						ids = append(ids, id)
					}
				}
				rows.Close()
			}
			for _, id := range ids {
				s.expire(ctx, id)
			}
			if err := s.flush(ctx, true); err != nil {
				s.opts.Logger.Warn("approval: outbox flush", "err", err)
			}
			wait = 50 * time.Millisecond
		}
		if d := s.announceExpiring(ctx); d < wait {
			wait = max(d, 10*time.Millisecond)
		}
		// Retry entries a failed append or another process left behind, so
		// a recovered log catches up without anyone asking.
		var queued int
		if s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_outbox`).Scan(&queued) == nil && queued > 0 {
			if err := s.flush(ctx, true); err != nil {
				s.opts.Logger.Warn("approval: outbox flush", "err", err, "queued", queued)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-s.changes():
		case <-t.C:
		}
		t.Stop()
	}
}
