package guard

import (
	"slices"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/vocab"
)

// What package server sees of an approval request. The server reaches the
// approval store only through the guard (DESIGN), so it reads a waiting
// call's or a task's request as this copy, made here, never as approval's
// own type.

// Request is an approval request as a transport needs it: a countersigned
// call waiting for, or decided by, its approvers, and a task's state. It is
// a copy taken when the guard hands it over; it does not change after.
type Request struct {
	ID             string
	State          vocab.State
	Running        bool   // approved, and its one run was claimed
	Code           string // shown both to the agent and on the page
	BindingMessage string
	URL            string   // the request's page
	Approvers      []string // ids of who may approve
	ApproverNames  []string
	Quorum         int
	Approvals      []string // approver ids counted so far
	CreatedAt      time.Time
	DecidedAt      time.Time
	ExpiresAt      time.Time
	// Outcome says, for the agent, how a settled request that did not
	// run ended (the package function Outcome); "" while it is not
	// settled.
	Outcome string

	settled bool // approval.Settled, at the time of the copy
}

// ErrNoTask is the answer about a task that does not exist, or is another
// agent's (Guard.Task).
var ErrNoTask = approval.ErrNotFound

// Settled reports whether nothing more will happen to r: it was denied,
// expired or cancelled, or its one run ended.
func Settled(r *Request) bool { return r.settled }

// viewOf is r as the transports see it; nil stays nil.
func viewOf(r *approval.Request) *Request {
	if r == nil {
		return nil
	}
	v := &Request{
		ID: r.ID, State: r.State, Running: r.Running, Code: r.Code, BindingMessage: r.BindingMessage, URL: r.URL,
		Approvers: slices.Clone(r.Approvers), ApproverNames: slices.Clone(r.ApproverNames), Quorum: r.Quorum,
		Approvals: slices.Clone(r.Approvals),
		CreatedAt: r.CreatedAt, DecidedAt: r.DecidedAt, ExpiresAt: r.ExpiresAt,
		settled: approval.Settled(r),
	}
	if v.settled {
		v.Outcome = Outcome(r)
	}
	return v
}

// viewsOf is rs as the transports see them.
func viewsOf(rs []*approval.Request) []*Request {
	vs := make([]*Request, len(rs))
	for i, r := range rs {
		vs[i] = viewOf(r)
	}
	return vs
}
