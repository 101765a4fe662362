package authz

import (
	"fmt"
	"slices"
	"strings"
)

// A quorum is met by distinct approvers, so what a critical level asks
// must fit in the approvers it is paired with. checkApprovers holds each
// tool's pairings to that; the functions here do the same for an
// upstream's default level, warn of a tool's quorum that no call can ever
// use, and list every pairing for the server to hold to the keys really
// enrolled (Policy.Quorums).
//
// An entry of an approver set that is still "role:NAME" after compiling
// is a role of the identity provider (issue 25): any number of people may
// hold it, known only when a request is made, so no count is refused or
// reported for such a set.

// Quorum is one way a tool's call can need approvers: at least N distinct
// ones among Approvers.
type Quorum struct {
	Tool string // the tool, or "upstream NAME (tools not listed under tools:)"
	// Path is where N comes from: the quorum key, or the level that
	// needs it when no quorum is set (high needs one approver).
	Path      string
	N         int
	From      string   // the path of the approver set
	Approvers []string // resolved approver ids, sorted
}

// Countable reports whether q's approvers are all known by id, so that
// how many of them can approve may be counted.
func (q Quorum) Countable() bool { return !slices.ContainsFunc(q.Approvers, isRole) }

// Quorums lists, tool by tool in name order and then upstream defaults,
// every pairing of a quorum with the approvers who may make it that a call
// can meet: high levels (one approver) and critical ones.
func (p *Policy) Quorums() []Quorum {
	if p == nil {
		return nil
	}
	names := make([]string, 0, len(p.tools))
	for name := range p.tools {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []Quorum
	for _, name := range names {
		out = append(out, p.tools[name].quorums("tools."+name, name)...)
	}
	for i, d := range p.upstreams {
		name := fmt.Sprintf("upstream %s (tools not listed under tools:)", d.name)
		path := fmt.Sprintf("upstreams[%d]", i)
		qs := d.other.quorums(path, name)
		if d.readOnly != d.other {
			qs = append(d.readOnly.quorums(path, name), qs...)
		}
		for i := range qs {
			qs[i].Path = path + ".default_level" // an upstream sets no quorum
		}
		out = append(out, qs...)
	}
	return slices.CompactFunc(out, func(a, b Quorum) bool {
		return a.Tool == b.Tool && a.Path == b.Path && a.N == b.N && a.From == b.From
	})
}

// quorums is what t's levels can ask, as Quorums describes. At run time
// approvers and quorum are each taken from the first matching critical
// rule that sets them, else from the tool (decide.go), so a critical
// rule's quorum may meet the tool's approvers and the other way round.
func (t *tool) quorums(p, name string) []Quorum {
	if t == nil || t.base == rankDeny {
		return nil
	}
	var out []Quorum
	add := func(path string, n int, from string, ids []string) {
		q := Quorum{Tool: name, Path: path, N: n, From: from, Approvers: ids}
		if !slices.ContainsFunc(out, func(o Quorum) bool { return o.Path == q.Path && o.From == q.From }) {
			out = append(out, q)
		}
	}
	if t.base == rankHigh {
		add(p+".level", 1, p+".approvers", t.approvers)
	}
	type set struct {
		path string
		ids  []string
	}
	var sets []set
	var quorums []Quorum
	toolSet, toolQuorum := t.base == rankCritical, t.base == rankCritical
	for _, r := range t.rules {
		rp := fmt.Sprintf("%s.rules[%d]", p, r.index)
		switch {
		case r.level == rankHigh && r.approvers != nil:
			add(rp+".level", 1, rp+".approvers", r.approvers)
		case r.level == rankHigh:
			add(rp+".level", 1, p+".approvers", t.approvers)
		case r.level == rankCritical:
			if r.approvers != nil {
				sets = append(sets, set{rp + ".approvers", r.approvers})
			} else {
				toolSet = true
			}
			if r.quorum > 0 {
				quorums = append(quorums, Quorum{Path: rp + ".quorum", N: r.quorum})
			} else {
				toolQuorum = true
			}
		}
	}
	if toolSet {
		sets = append(sets, set{p + ".approvers", t.approvers})
	}
	if toolQuorum {
		quorums = append(quorums, Quorum{Path: p + ".quorum", N: cmp(t.quorum, DefaultCriticalQuorum)})
	}
	for _, q := range quorums {
		for _, s := range sets {
			add(q.Path, q.N, s.path, s.ids)
		}
	}
	return out
}

// checkDefaultQuorum refuses an upstream whose default level is critical
// while its approvers are fewer than the default quorum: no call of its
// unlisted tools could ever be approved.
func (c *compiler) checkDefaultQuorum(p string, rank int, approvers []string) {
	if rank != rankCritical || len(approvers) == 0 || len(approvers) >= DefaultCriticalQuorum || slices.ContainsFunc(approvers, isRole) {
		return
	}
	c.fail(p+".default_level", "critical needs a quorum of %d distinct approvers, but %s allows %d (%s): list more approvers, or list the tools under tools: with their own quorum",
		DefaultCriticalQuorum, p+".approvers", len(approvers), strings.Join(approvers, ", "))
}

// warnUnusedQuorum says when a tool's quorum can never apply: the tool is
// not critical itself and every critical rule sets its own quorum, so the
// tool's is never the one a call needs. It is a warning, not a refusal:
// the policy means what it says, but the reader of the file may think the
// tool's quorum protects something.
func (c *compiler) warnUnusedQuorum(p string, t *tool) {
	if t.quorum <= 0 || t.base == rankCritical {
		return
	}
	var own []string
	for _, r := range t.rules {
		if r.level != rankCritical {
			continue
		}
		if r.quorum <= 0 {
			return
		}
		own = append(own, fmt.Sprintf("rules[%d] sets %d", r.index, r.quorum))
	}
	if len(own) == 0 {
		return // no critical level at all: checkApprovers refuses a quorum over 1
	}
	c.opts.Logger.Warn(fmt.Sprintf("authz: %s.quorum %d is never used: %s is not critical itself and every critical rule sets its own quorum (%s)",
		p, t.quorum, t.name, strings.Join(own, ", ")), "path", p+".quorum")
}
