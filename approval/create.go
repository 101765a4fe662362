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
