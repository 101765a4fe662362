package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/authz"
)

// Quorums that enrolled keys cannot meet yet. config validate refuses a
// quorum larger than the approvers who may meet it; whether they have
// keys is known only here, and changes as people enroll and keys are
// revoked. So serve logs, at start, each tool whose approvers with an
// enrolled, unrevoked key are fewer than a quorum it can need, and
// /readyz names them on a WARN line while that lasts.
//
// It is a warning, not a failed probe: the server is still of use (its
// other calls run, its requests wait until someone enrolls), and the page
// people enroll through is served by this same process, which a failed
// probe would take out of a load balancer's rotation. Approver sets with a
// role of the identity provider are not counted: who holds it is known
// only when a request is made (authz.Quorum.Countable).

// shortQuorum is a tool whose approvers with a key are fewer than a quorum
// it can need.
type shortQuorum struct {
	tool string
	need authz.Quorum
	keys []string // approvers of need with an enrolled, unrevoked key
}

func (q shortQuorum) String() string {
	enroll := slices.DeleteFunc(slices.Clone(q.need.Approvers), func(a string) bool { return slices.Contains(q.keys, a) })
	return fmt.Sprintf("%s needs %d of %s (%s); %d with an enrolled, unrevoked key (%s); still to enroll: %s",
		q.need.Path, q.need.N, q.need.From, strings.Join(q.need.Approvers, ", "),
		len(q.keys), orNone(q.keys), orNone(enroll))
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// shortQuorums lists, for each tool and approver set, the largest quorum
// its approvers with a key cannot meet now.
func (s *Stack) shortQuorums(ctx context.Context) ([]shortQuorum, error) {
	if s.approvals == nil || len(s.quorums) == 0 {
		return nil, nil
	}
	holders, err := s.holders(ctx)
	if err != nil {
		return nil, err
	}
	var out []shortQuorum
	for _, q := range s.quorums {
		if !q.Countable() {
			continue
		}
		keys := slices.DeleteFunc(slices.Clone(q.Approvers), func(a string) bool { return !holders[a] })
		if len(keys) >= q.N {
			continue
		}
		i := slices.IndexFunc(out, func(o shortQuorum) bool { return o.tool == q.Tool && o.need.From == q.From })
		switch {
		case i < 0:
			out = append(out, shortQuorum{tool: q.Tool, need: q, keys: keys})
		case q.N > out[i].need.N:
			out[i].need = q
		}
	}
	return out, nil
}

// logShortQuorums says, once at start, what shortQuorums finds.
func (s *Stack) logShortQuorums(ctx context.Context, log *slog.Logger) {
	short, err := s.shortQuorums(ctx)
	if err != nil {
		log.Warn("cannot count the approvers with an enrolled key", "err", err)
		return
	}
	for _, q := range short {
		log.Warn("too few approvers with an enrolled, unrevoked key to meet a quorum: its calls wait until more enroll (countersign approvers enroll ID)",
			"tool", q.tool, "quorum", q.need.N, "from", q.need.Path, "approvers", q.need.From, "with_key", len(q.keys), "detail", q.String())
	}
}

// holders are the approvers with an enrolled, unrevoked key: who can
// approve now.
func (s *Stack) holders(ctx context.Context) (map[string]bool, error) {
	creds, err := s.approvals.Credentials(ctx)
	if err != nil {
		return nil, err
	}
	return ceremony.Holders(creds), nil
}
