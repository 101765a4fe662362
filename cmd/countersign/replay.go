package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/ciba"
	"github.com/countersign/countersign/vocab"
)

// policyReplayer checks logged decisions against the policy each names,
// compiling every distinct policy document once.
type policyReplayer struct {
	compiled map[string]*authz.Policy
}

func newPolicyReplayer() *policyReplayer {
	return &policyReplayer{compiled: map[string]*authz.Policy{}}
}

func (r *policyReplayer) Replay(doc json.RawMessage, e *audit.Entry) error {
	p := r.compiled[e.PolicySHA256]
	if p == nil {
		var d authz.Document
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return fmt.Errorf("the logged policy is not a policy document: %w", err)
		}
		var err error
		if p, err = d.Compile(); err != nil {
			return fmt.Errorf("the logged policy does not compile: %w", err)
		}
		r.compiled[e.PolicySHA256] = p
	}
	rec := authz.Recorded{Tool: e.Tool, Agent: e.Agent, Level: vocab.Level(e.Decision), Granted: e.GrantID != ""}
	if e.Kind == vocab.KindApprovalRequested {
		rec.Level = e.Level
		rec.Requirement = &authz.Requirement{Approvers: e.Eligible, Quorum: e.Quorum, UserVerification: e.UserVerification, Batchable: e.Batchable}
		if rec.Agent == "anonymous" {
			rec.Agent = "" // approval names an unauthenticated agent so; the policy saw ""
		}
	}
	if e.Rule != "" {
		rec.Rules = strings.Split(e.Rule, ",")
	}
	if len(e.Usage) > 0 {
		if err := json.Unmarshal(e.Usage, &rec.Usage); err != nil {
			return fmt.Errorf("usage: %w", err)
		}
	}
	if len(e.Args) > 0 {
		if err := json.Unmarshal(e.Args, &rec.Args); err != nil {
			return fmt.Errorf("args: %w", err)
		}
		if rec.Args == nil {
			rec.Args = map[string]any{}
		}
	}
	if e.Tool == ciba.Tool {
		// tools.ciba is a floor: login_hint narrows its approvers, and
		// the policies of the tools its details describe can raise it.
		return p.ReplayFloor(rec)
	}
	return p.Replay(rec)
}
