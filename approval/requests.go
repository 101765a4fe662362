package approval

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// NewRequest is what the MCP server asks a human to countersign.
type NewRequest struct {
	Tool  string
	Agent string
	// Args are the validated arguments, canonical: exactly what will
	// run. The request stores and hashes them as they are.
	Args digest.Args
	// AuthorizationDetails is the RFC 9396 array the tool describes the
	// action with; the page is rendered from it, not from agent text.
	AuthorizationDetails json.RawMessage
	// Summary is a short binding text from the tool.
	Summary          string
	Level            vocab.Level // high or critical
	Rule             string      // rule(s) that raised it
	PolicySHA256     string      // the policy they are in: a reload does not change whose decision it was
	Approvers        []string
	Quorum           int
	UserVerification vocab.UserVerification // critical is always required
	Timeout          time.Duration
	RedactArgs       bool // audit entries keep only args_sha256
	// Wait is how the call waits: WaitBlock (default), WaitPoll or WaitTask. It
	// decides what a restart does with the request (see Restart).
	Wait string
	// Grant, when set, is the standing grant the approver is offered with
	// this request (grant.go); the server derived it, the page shows it.
	Grant *grant.Offer
	// Batchable lets an approver approve it together with others in one
	// tap (batch.go). Ignored at critical: each critical approval keeps
	// its own tap.
	Batchable bool
	// Caps, when set, refuse the request (a *CapError) if too many
	// already wait for a human.
	Caps PendingCaps
}

// Request is a snapshot of one request.
type Request struct {
	ID             string
	Tool, Agent    string
	State          vocab.State
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
	Level                vocab.Level
	Display              string
	AuthorizationDetails json.RawMessage
	CreatedAt            time.Time
}

// Terminal reports whether no further decision can change the request.
func (r *Request) Terminal() bool { return r.State != vocab.StatePending }

func (s *Service) requestURL(id string) string { return s.opts.PublicURL + "/requests/" + id }

// row is a request as stored.
type row struct {
	Request
	args         []byte
	argsSHA256   string
	redact       bool
	summary      string
	rule, policy string
	uv           vocab.UserVerification
	nonce        []byte
	expiresSec   int64
	execClaim    int64
	lastPoll     int64
	unlogged     bool // outbox entries not yet appended
}

const rowColumns = `id, tool, agent, args, args_sha256, redact_args, authorization_details, summary, display, level, rule,
	approvers, quorum, user_verification, code, binding_message, nonce, created_at, expires_at, interval_ms, state,
	decided_by, decided_at, reason, exec_claimed_at, result, last_poll, wait_mode, policy_sha256,
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
		&r.expiresSec, &interval, &r.State, &r.DecidedBy, &decided, &r.Reason, &r.execClaim, &result, &r.lastPoll, &r.Wait, &r.policy, &r.unlogged, &r.Batchable)
	if err != nil {
		return nil, err
	}
	r.AuthorizationDetails = details
	if len(result) > 0 {
		r.Result, r.ResultUntil = s.results.Open(r.ID, result, s.now())
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
	r.Running = r.State == vocab.StateApproved && r.execClaim > 0
	// An approval counts only once the log has it.
	if r.State == vocab.StateApproved && r.unlogged {
		r.State = vocab.StatePending
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
	rows, err := q.QueryContext(ctx, `SELECT approver_id FROM approval_votes WHERE request_id = ? AND decision = ? ORDER BY created_at`, id, vocab.Approve)
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
	return s.selected(ctx, `SELECT id FROM approval_requests WHERE `+where+` ORDER BY `+order+` LIMIT ?`, limit)
}

// selected returns the requests whose ids query selects, in its order:
// the ids are read first and the rows closed, since Get queries again.
func (s *Service) selected(ctx context.Context, query string, args ...any) ([]*Request, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
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
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]*Request, 0, len(ids))
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
// It reads the caps' counter: every open page asks on every change.
func (s *Service) PendingCount(ctx context.Context) (int, error) {
	return pending.Count(ctx, s.db, "")
}
