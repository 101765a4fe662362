package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/countersign/countersign/vocab"
)

// Combine is the decision of a backchannel request (guard.Raise) given
// floor, its own policy's decision (combined with its earlier actions'),
// and d, the decision of one of its actions by tool's policy. The stricter wins in
// every part:
//
//   - level: the higher; deny if either denies;
//   - approvers: those both allow (each policy names who may approve what
//     it guards; a request under both needs someone both trust);
//   - quorum: the larger; user verification: the stronger;
//   - timeout: the shorter.
//
// Rules are named tool:rule for the action's policy. Standing grants and
// batches never apply to a backchannel request.
func Combine(floor Decision, tool string, d Decision) Decision {
	qualified := make([]string, len(d.Rules))
	for i, r := range d.Rules {
		qualified[i] = tool + ":" + r
	}
	if floor.Level == vocab.LevelDeny {
		return floor
	}
	if d.Level == vocab.LevelDeny {
		d.Rules = qualified
		d.Reason = fmt.Sprintf("%s policy: %s", tool, d.Reason)
		return d
	}
	rank := map[vocab.Level]int{vocab.LevelLow: 0, vocab.LevelHigh: 1, vocab.LevelCritical: 2}
	out := floor
	out.Grant, out.Batchable = nil, false
	if rank[d.Level] > rank[floor.Level] {
		out.Level = d.Level
	}
	if len(qualified) > 0 || rank[d.Level] >= rank[out.Level] {
		out.Rules = append(slices.Clone(floor.Rules), qualified...)
		out.Reason = strings.TrimPrefix(floor.Reason+"; "+tool+" policy: "+d.Reason, "; ")
	}
	if d.Level == vocab.LevelLow {
		return out // the tool's policy asks nobody; the floor's people decide
	}
	if out.Level == vocab.LevelLow {
		out.Approvers = nil
	}
	switch {
	case len(out.Approvers) == 0:
		out.Approvers = slices.Clone(d.Approvers)
	default:
		out.Approvers = slices.DeleteFunc(slices.Clone(out.Approvers), func(a string) bool { return !slices.Contains(d.Approvers, a) })
		if len(out.Approvers) == 0 {
			return Decision{Level: vocab.LevelDeny, Rules: out.Rules,
				Reason: fmt.Sprintf("no approver is allowed both by the backchannel policy and by %s's: nobody may countersign this request", tool)}
		}
	}
	out.Quorum = max(out.Quorum, d.Quorum, 1)
	if out.Level == vocab.LevelCritical {
		out.UserVerification = vocab.UVRequired
	} else {
		out.UserVerification = strongerUV(out.UserVerification, d.UserVerification)
	}
	if d.Timeout > 0 && (out.Timeout <= 0 || d.Timeout < out.Timeout) {
		out.Timeout = d.Timeout
	}
	return out
}

func strongerUV(a, b vocab.UserVerification) vocab.UserVerification {
	rank := map[vocab.UserVerification]int{vocab.UVDiscouraged: 0, vocab.UVPreferred: 1, vocab.UVRequired: 2}
	if rank[b] > rank[a] || a == "" {
		return b
	}
	return a
}
