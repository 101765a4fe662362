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

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/approval/pending"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
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
	c, err := s.prepare(r)
	if err != nil {
		return nil, err
	}
	if err := s.insert(ctx, c); err != nil {
		return &Request{ID: c.id}, fmt.Errorf("approval: create: %w", err) // a commit cut short may have stored it
	}
	// The request exists now. One not handed back comes with the error, only its ID set: its
	// caller ends it when the database lets it (guard's abandon), never leaving it pending unseen.
	return s.publish(context.WithoutCancel(ctx), c)
}

// creation is a request checked, completed with its defaults and given
// what identifies it, ready to be stored.
type creation struct {
	NewRequest
	argsSHA256 string   // hex
	approvers  []string // eligible, each once
	id         string
	code       string
	nonce      []byte
	summary    string
	binding    string
	display    string
	created    time.Time
	expires    time.Time
}

// prepare checks r and gives it its id, code, nonce, expiry and display.
func (s *Service) prepare(r NewRequest) (*creation, error) {
	argsSum, details, err := checkPayload(&r)
	if err != nil {
		return nil, err
	}
	if err := applyLevel(&r); err != nil {
		return nil, err
	}
	approvers, err := s.eligible(r)
	if err != nil {
		return nil, err
	}
	if r.Timeout <= 0 {
		r.Timeout = 5 * time.Minute
	}
	r.Batchable = r.Batchable && r.Level == vocab.LevelHigh
	if err := checkWait(&r); err != nil {
		return nil, err
	}

	c := &creation{NewRequest: r, argsSHA256: hex.EncodeToString(argsSum[:]), approvers: approvers}
	c.nonce = make([]byte, 32)
	if _, err := rand.Read(c.nonce); err != nil {
		return nil, err
	}
	if c.code, err = newCode(); err != nil {
		return nil, err
	}
	c.id = uuid.NewString()
	c.created = s.now()
	c.expires = c.created.Add(r.Timeout).Truncate(time.Second)
	c.summary = authzdetails.Clean(r.Summary, 300)
	if c.summary == "" {
		c.summary = r.Tool
	}
	c.binding = c.summary + " (code " + c.code + ")"
	if c.display, err = authzdetails.Render(details, r.Args.JSON(), r.Tool, r.Agent, c.code); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	return c, nil
}

// checkPayload checks what the call is (tool, agent, arguments and
// authorization_details), filling in their defaults, and returns the
// arguments' digest and the details array.
func checkPayload(r *NewRequest) ([32]byte, []json.RawMessage, error) {
	if r.Tool == "" {
		return [32]byte{}, nil, fmt.Errorf("%w: tool is required", ErrInvalidRequest)
	}
	if r.Agent == "" {
		r.Agent = "anonymous"
	}
	if r.Args.IsZero() {
		r.Args, _ = digest.ParseArgs(nil) // {}
	}
	if len(r.AuthorizationDetails) == 0 {
		r.AuthorizationDetails = json.RawMessage(`[]`)
	}
	var details []json.RawMessage
	if err := json.Unmarshal(r.AuthorizationDetails, &details); err != nil {
		return [32]byte{}, nil, fmt.Errorf("%w: authorization_details must be a JSON array: %v", ErrInvalidRequest, err)
	}
	return r.Args.SHA256(), details, nil
}

// applyLevel gives r its level's default quorum and user verification:
// critical needs two approvers and always user verification.
func applyLevel(r *NewRequest) error {
	switch r.Level {
	case vocab.LevelHigh:
		if r.Quorum <= 0 {
			r.Quorum = 1
		}
	case vocab.LevelCritical:
		if r.Quorum <= 0 {
			r.Quorum = 2
		}
		r.UserVerification = vocab.UVRequired
	default:
		return fmt.Errorf("%w: level %q (want high or critical)", ErrInvalidRequest, r.Level)
	}
	switch r.UserVerification {
	case "":
		r.UserVerification = vocab.UVPreferred
	case vocab.UVRequired, vocab.UVPreferred, vocab.UVDiscouraged:
	default:
		return fmt.Errorf("%w: user_verification %q", ErrInvalidRequest, r.UserVerification)
	}
	return nil
}

// eligible is r's approvers, each once, all configured, and enough of
// them for its quorum.
func (s *Service) eligible(r NewRequest) ([]string, error) {
	var approvers []string
	for _, id := range s.opts.People.Expand(r.Approvers) {
		if _, ok := (*s.approvers.Load())[id]; !ok && !s.opts.People.Has(id) {
			return nil, fmt.Errorf("%w: %w %q", ErrInvalidRequest, ceremony.ErrUnknownApprover, id)
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
	return approvers, nil
}

// checkWait checks how the call waits, WaitBlock unless it says.
func checkWait(r *NewRequest) error {
	switch r.Wait {
	case "":
		r.Wait = WaitBlock
	case WaitBlock, WaitPoll, WaitBackchannel, WaitTask:
	default:
		return fmt.Errorf("%w: wait %q (want block, poll, backchannel or task)", ErrInvalidRequest, r.Wait)
	}
	return nil
}

// requestedEntry is c's approval.requested entry. The requirement is
// recorded as fields, so that an auditor can check offline that every
// approval met it.
func requestedEntry(c *creation) audit.Entry {
	entry := audit.Entry{
		Kind:                 vocab.KindApprovalRequested,
		RequestID:            c.id,
		Agent:                c.Agent,
		Tool:                 c.Tool,
		Level:                c.Level,
		Rule:                 c.Rule,
		PolicySHA256:         c.PolicySHA256, // not the one in force when the outbox appends it
		Quorum:               c.Quorum,
		Eligible:             c.approvers,
		UserVerification:     c.UserVerification,
		Batchable:            c.Batchable,
		ArgsSHA256:           c.argsSHA256,
		AuthorizationDetails: c.AuthorizationDetails,
		Display:              c.display,
		Nonce:                base64.RawURLEncoding.EncodeToString(c.nonce),
		ExpiresAt:            digest.FormatTime(c.expires),
		Reason:               fmt.Sprintf("binding message %q", c.binding),
	}
	if c.RedactArgs {
		entry.ArgsRedact = true
	} else {
		entry.Args = c.Args.JSON()
	}
	return entry
}

// insert stores c, its grant offer and batchability, and queues its
// approval.requested entry, in one transaction.
func (s *Service) insert(ctx context.Context, c *creation) error {
	approversJSON, _ := json.Marshal(c.approvers)
	entry := requestedEntry(c)
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		// A frozen agent raises nothing: checked under the write lock, so
		// a freeze committed before this is seen, and one after it finds
		// this request pending and cancels it.
		if f, err := freeze.In(ctx, tx, c.Agent); err != nil || f != nil {
			return errors.Join(err, freeze.Err(f))
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO approval_requests
			(id, tool, agent, args, args_sha256, redact_args, authorization_details, summary, display, level, rule,
			 approvers, quorum, user_verification, code, binding_message, nonce, created_at, expires_at, interval_ms, state, wait_mode, owner, policy_sha256)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			c.id, c.Tool, c.Agent, []byte(c.Args.JSON()), c.argsSHA256, c.RedactArgs, []byte(c.AuthorizationDetails),
			c.summary, c.display, c.Level, c.Rule, string(approversJSON), c.Quorum, c.UserVerification, c.code, c.binding, c.nonce,
			c.created.UnixNano(), c.expires.Unix(), s.opts.PollInterval.Milliseconds(), vocab.StatePending, c.Wait, s.owner, c.PolicySHA256)
		if err != nil {
			return err
		}
		if err := pending.Raised(ctx, tx, c.Agent, c.Caps); err != nil {
			return err // a cap refused it: rolled back
		}
		if err := s.offerGrant(ctx, tx, c.id, c.NewRequest); err != nil {
			return err
		}
		if c.Batchable {
			if err := markBatchable(ctx, tx, c.id); err != nil {
				return err
			}
		}
		return s.enqueue(ctx, tx, c.id, entry)
	})
}

// publish appends the stored request's entry to the log and only then lets
// it be seen: waiters, the page, notifications. A request that cannot be
// recorded or read back is ended, never left pending unseen.
func (s *Service) publish(ctx context.Context, c *creation) (*Request, error) {
	if err := s.flush(ctx, false); err != nil {
		// Not recorded, so it must not be decided: end it.
		s.endRequest(ctx, c.id, vocab.StateCancelled, "", "audit log unavailable")
		return &Request{ID: c.id}, err
	}
	s.opts.Logger.Info("approval requested", "id", c.id, "tool", c.Tool, "agent", c.Agent, "url", s.requestURL(c.id), "code", c.code)
	s.notify(c.id)
	req, err := s.Get(ctx, c.id)
	if err != nil {
		s.endRequest(ctx, c.id, vocab.StateCancelled, "", "cannot read the request back: "+err.Error())
		return &Request{ID: c.id}, err
	}
	s.announce(EventRequested, req)
	return req, nil
}
