package authz

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/vocab"
)

// Document is a policy as the audit log records it (policy.loaded): what
// Compile reads (tools, approvers and their roles, the default approval
// timeout, each tool's fact variables) with JSON names, and nothing
// else. Compiling a document gives a policy that decides exactly as the
// one it was made from, so an auditor can read the policy in force at a
// decision and replay the decision offline ([Policy.Replay]).
type Document struct {
	Tools          map[string]DocumentTool `json:"tools"`
	Approvers      []DocumentApprover      `json:"approvers"`
	DefaultTimeout string                  `json:"default_timeout"`
	Facts          map[string][]string     `json:"facts,omitempty"`
	// Upstreams give the level of upstream tools not listed under tools.
	Upstreams []DocumentUpstream `json:"upstreams,omitempty"`
	// IdentityRoles is identity.roles (Options.IdentityRoles): which
	// groups of the company's identity provider grant each role. Left
	// out without a provider, so that such a policy's document is what
	// it was before.
	IdentityRoles map[string][]string `json:"identity_roles,omitempty"`
}

// DocumentUpstream is what of a config.Upstream decides: how its tools are
// named and the default for those the policy does not list.
type DocumentUpstream struct {
	Name         string      `json:"name"`
	Prefix       string      `json:"prefix"`
	DefaultLevel vocab.Level `json:"default_level,omitempty"`
	Approvers    []string    `json:"approvers,omitempty"`
}

// DocumentTool is config.Tool without what does not decide (redaction).
type DocumentTool struct {
	Level            vocab.Level            `json:"level"`
	Rules            []DocumentRule         `json:"rules,omitempty"`
	Approvers        []string               `json:"approvers,omitempty"`
	Quorum           int                    `json:"quorum,omitempty"`
	UserVerification vocab.UserVerification `json:"user_verification,omitempty"`
	Timeout          string                 `json:"timeout,omitempty"`
	Wait             string                 `json:"wait,omitempty"`
	Grants           *DocumentGrants        `json:"grants,omitempty"`
	// Batchable is left out when false, so that the document (and the
	// policy_sha256 naming it) of a policy without batches is what it was
	// before batches existed.
	Batchable bool `json:"batchable,omitempty"`
}

// DocumentGrants is config.Grants: what a tool allows of standing grants.
type DocumentGrants struct {
	MaxDuration string   `json:"max_duration"`
	MaxCalls    int      `json:"max_calls"`
	AtMost      []string `json:"at_most,omitempty"`
	Free        []string `json:"free,omitempty"`
}

// DocumentRule is config.Rule.
type DocumentRule struct {
	Name      string      `json:"name,omitempty"`
	When      string      `json:"when"`
	Level     vocab.Level `json:"level"`
	Approvers []string    `json:"approvers,omitempty"`
	Quorum    int         `json:"quorum,omitempty"`
}

// DocumentApprover is an approver's id and roles (names do not decide).
type DocumentApprover struct {
	ID    string   `json:"id"`
	Roles []string `json:"roles,omitempty"`
}

// NewDocument is the document of the policy Compile(tools, approvers,
// opts) builds.
func NewDocument(tools map[string]config.Tool, approvers []config.Approver, opts Options) Document {
	d := Document{Tools: map[string]DocumentTool{}, DefaultTimeout: opts.DefaultTimeout.String(), IdentityRoles: opts.IdentityRoles}
	for name, t := range tools {
		dt := DocumentTool{Level: t.Level, Approvers: t.Approvers, Quorum: t.Quorum, UserVerification: t.UserVerification, Wait: t.Wait, Batchable: t.Batchable}
		if t.Timeout != 0 {
			dt.Timeout = t.Timeout.String()
		}
		if g := t.Grants; g.Enabled() {
			dt.Grants = &DocumentGrants{MaxDuration: g.MaxDuration.String(), MaxCalls: g.MaxCalls, AtMost: g.AtMost, Free: g.Free}
		}
		for _, r := range t.Rules {
			dt.Rules = append(dt.Rules, DocumentRule{Name: r.Name, When: r.When, Level: r.Level, Approvers: r.Approvers, Quorum: r.Quorum})
		}
		d.Tools[name] = dt
	}
	for _, a := range approvers {
		d.Approvers = append(d.Approvers, DocumentApprover{ID: a.ID, Roles: a.Roles})
	}
	for _, u := range opts.Upstreams {
		d.Upstreams = append(d.Upstreams, DocumentUpstream{Name: u.Name, Prefix: u.Prefix, DefaultLevel: u.DefaultLevel, Approvers: u.Approvers})
	}
	for name, facts := range opts.Facts {
		if _, ok := tools[name]; ok && len(facts) > 0 {
			if d.Facts == nil {
				d.Facts = map[string][]string{}
			}
			d.Facts[name] = slices.Clone(facts)
		}
	}
	return d
}

// Compile compiles the document, for replay: every rule also gets a
// program that can evaluate with facts and now unknown.
func (d Document) Compile() (*Policy, error) {
	parse := func(path, s string) (time.Duration, error) {
		if s == "" {
			return 0, nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, &CompileError{Path: path, Msg: fmt.Sprintf("bad duration %q", s)}
		}
		return v, nil
	}
	def, err := parse("default_timeout", d.DefaultTimeout)
	if err != nil {
		return nil, err
	}
	tools := map[string]config.Tool{}
	for _, name := range slices.Sorted(maps.Keys(d.Tools)) {
		dt := d.Tools[name]
		timeout, err := parse("tools."+name+".timeout", dt.Timeout)
		if err != nil {
			return nil, err
		}
		t := config.Tool{Level: dt.Level, Approvers: dt.Approvers, Quorum: dt.Quorum, UserVerification: dt.UserVerification, Timeout: timeout, Wait: dt.Wait, Batchable: dt.Batchable}
		if g := dt.Grants; g != nil {
			d, err := parse("tools."+name+".grants.max_duration", g.MaxDuration)
			if err != nil {
				return nil, err
			}
			t.Grants = config.Grants{MaxDuration: d, MaxCalls: g.MaxCalls, AtMost: g.AtMost, Free: g.Free}
		}
		for _, r := range dt.Rules {
			t.Rules = append(t.Rules, config.Rule{Name: r.Name, When: r.When, Level: r.Level, Approvers: r.Approvers, Quorum: r.Quorum})
		}
		tools[name] = t
	}
	var approvers []config.Approver
	for _, a := range d.Approvers {
		approvers = append(approvers, config.Approver{ID: a.ID, Roles: a.Roles})
	}
	var ups []config.Upstream
	for _, u := range d.Upstreams {
		ups = append(ups, config.Upstream{Name: u.Name, Prefix: u.Prefix, DefaultLevel: u.DefaultLevel, Approvers: u.Approvers})
	}
	return Compile(tools, approvers, Options{DefaultTimeout: def, Facts: d.Facts, Upstreams: ups, IdentityRoles: d.IdentityRoles, replay: true})
}
