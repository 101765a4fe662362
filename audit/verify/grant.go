package verify

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// Standing grants, as the verifier replays them.
//
// A grant is created by the tap that approves a request: that
// approval.assertion carries grant_id, grant_condition, grant_max_calls and
// grant_expires_at, and its WebAuthn assertion signs the grant digest
// ([digest.ComputeGrant]) over the request's action digest, so one
// signature covers the request and the grant's condition and limits. The
// grant is in force once the request's approval.approved lists that
// assertion. Every call it lets through is a call.allowed at level high
// naming grant_id and grant_seq (the assertion's seq), followed by its
// outcome (call.executed, call.failed or call.interrupted) with the same
// references. grant.revoked ends it.
//
// The rules, each failing with the entry's seq:
//
//   - the grant's request was raised at high with quorum 1 (a critical
//     request never creates a grant), and the grant's condition compiles
//     as a bool CEL expression over agent, tool and args only;
//   - a granted call names a grant in force, by its id and the seq of the
//     assertion that created it; is for the grant's agent and tool at
//     level high; was decided (decided_at) after the grant was created,
//     before its grant_expires_at and before any revocation; is at most
//     the grant_max_calls-th call of the grant; and its logged arguments
//     (never redacted, and matching args_sha256) satisfy the condition,
//     evaluated here with cel-go;
//   - an outcome of a granted call follows its call.allowed;
//   - grant.revoked names a grant that exists, once.
//
// The verifier cannot know what the policy allowed (a tool's grants
// section); with --replay-policy, a granted call's tool must allow grants.
type grantBook struct {
	byID map[string]*grant
	open map[string]int32 // granted calls allowed and not yet run, by grant id and call key
	// calls counts granted calls checked, for the summary.
	calls int
}

type grant struct {
	id          string
	seq         int64 // of the approval.assertion that created it
	agent, tool string
	cond        cel.Program
	max, used   int
	created     time.Time // the assertion's decided_at
	expires     time.Time
	active      bool // its request's approval.approved listed the assertion
	revoked     time.Time
	revokedSeq  int64
}

func newGrantBook() grantBook {
	return grantBook{byID: map[string]*grant{}, open: map[string]int32{}}
}

// grantFields refuses grant fields on entries that have no business with
// them, so that a forged reference cannot hide in an unchecked kind.
func grantFields(e *audit.Entry) string {
	creates := e.GrantCondition != "" || e.GrantMaxCalls != 0 || e.GrantExpiresAt != ""
	refers := e.GrantID != "" || e.GrantSeq != 0
	switch e.Kind {
	case vocab.KindApprovalAssertion:
		if e.GrantSeq != 0 {
			return "approval.assertion carries grant_seq; only granted calls and grant.revoked do"
		}
		return ""
	case vocab.KindCallAllowed, vocab.KindCallExecuted, vocab.KindCallFailed, vocab.KindCallInterrupted, vocab.KindGrantRevoked:
		if creates {
			return string(e.Kind) + " carries a grant's condition or limits; only the approval.assertion that creates it does"
		}
		return ""
	}
	if creates || refers {
		return string(e.Kind) + " carries grant fields"
	}
	return ""
}

// grantChallenge is the grant digest an approval.assertion creating a
// grant signs, over the request's action digest.
func grantChallenge(e *audit.Entry, action [32]byte) ([32]byte, error) {
	expires, err := parseWholeSeconds(e.GrantExpiresAt)
	if err != nil {
		return [32]byte{}, fmt.Errorf("grant_expires_at: %v", err)
	}
	sum, err := digest.ComputeGrant(digest.Grant{Request: action, GrantID: e.GrantID, Condition: e.GrantCondition,
		MaxCalls: e.GrantMaxCalls, ExpiresAt: expires})
	if err != nil {
		return [32]byte{}, fmt.Errorf("grant digest: %v", err)
	}
	return sum, nil
}

func parseWholeSeconds(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || digest.FormatTime(t) != s {
		return time.Time{}, fmt.Errorf("%q is not RFC 3339 UTC in whole seconds", s)
	}
	return t, nil
}

// proposed notes the grant an approval.assertion of request req creates.
func (b *grantBook) proposed(req *audit.Entry, e *audit.Entry, decided time.Time) string {
	switch {
	case e.Kind != vocab.KindApprovalAssertion:
		return string(e.Kind) + " creates a grant; only an approval counts"
	case req.Level != vocab.LevelHigh || req.Quorum != 1:
		return fmt.Sprintf("grant %s on request %s at level %s with quorum %d: grants cover high requests with one approver only", e.GrantID, e.RequestID, req.Level, req.Quorum)
	case b.byID[e.GrantID] != nil:
		return fmt.Sprintf("grant %s was already created at seq %d", e.GrantID, b.byID[e.GrantID].seq)
	case e.GrantMaxCalls < 1:
		return fmt.Sprintf("grant %s allows %d calls", e.GrantID, e.GrantMaxCalls)
	}
	expires, err := parseWholeSeconds(e.GrantExpiresAt)
	if err != nil {
		return "grant_expires_at: " + err.Error()
	}
	if !expires.After(decided) {
		return fmt.Sprintf("grant %s expires at %s, before it was created at %s", e.GrantID, e.GrantExpiresAt, e.DecidedAt)
	}
	prg, err := compileCondition(e.GrantCondition)
	if err != nil {
		return fmt.Sprintf("grant %s: condition: %v", e.GrantID, err)
	}
	b.byID[e.GrantID] = &grant{id: e.GrantID, seq: e.Seq, agent: req.Agent, tool: req.Tool, cond: prg,
		max: e.GrantMaxCalls, created: decided, expires: expires}
	return ""
}

// activate puts in force the grants created by the assertions an
// approval.approved lists.
func (b *grantBook) activate(assertions []int64) {
	for _, g := range b.byID {
		if slices.Contains(assertions, g.seq) {
			g.active = true
		}
	}
}

// in finds the grant a granted call or revocation names.
func (b *grantBook) in(e *audit.Entry) (*grant, string) {
	g := b.byID[e.GrantID]
	switch {
	case e.GrantID == "" || e.GrantSeq == 0:
		return nil, string(e.Kind) + " names a grant without both grant_id and grant_seq"
	case g == nil:
		return nil, fmt.Sprintf("%s names grant %s, which no earlier approval created", e.Kind, e.GrantID)
	case g.seq != e.GrantSeq:
		return nil, fmt.Sprintf("grant_seq %d is not the approval.assertion that created grant %s (seq %d)", e.GrantSeq, e.GrantID, g.seq)
	}
	return g, ""
}

func grantCallKey(e *audit.Entry) string { k := keyOf(e); return e.GrantID + "\x00" + string(k[:]) }

// allowed checks a call.allowed that a grant let through.
func (b *grantBook) allowed(q *requirements, e *audit.Entry) string {
	g, reason := b.in(e)
	if g == nil {
		return reason
	}
	decided, err := time.Parse(audit.TimeFormat, e.DecidedAt)
	switch {
	case !g.active:
		return fmt.Sprintf("grant %s was never in force: the approval of its request does not list the assertion at seq %d", g.id, g.seq)
	case vocab.Level(e.Decision) != vocab.LevelHigh:
		return fmt.Sprintf("a grant covers calls at level high only; this one is at %q", e.Decision)
	case e.RequestID != "":
		return "a granted call names an approval request; it has none of its own"
	case e.Agent != g.agent || e.Tool != g.tool:
		return fmt.Sprintf("granted call by %s of %s; grant %s is for %s's calls of %s", e.Agent, e.Tool, g.id, g.agent, g.tool)
	case err != nil:
		return fmt.Sprintf("granted call has decided_at %q, not a time in the log's format", e.DecidedAt)
	case decided.Before(g.created):
		return fmt.Sprintf("granted call decided at %s, before grant %s was created at %s", e.DecidedAt, g.id, g.created.Format(audit.TimeFormat))
	case !decided.Before(g.expires):
		return fmt.Sprintf("granted call decided at %s, after grant %s expired at %s", e.DecidedAt, g.id, digest.FormatTime(g.expires))
	case g.revokedSeq != 0 && !decided.Before(g.revoked):
		return fmt.Sprintf("granted call decided at %s, after grant %s was revoked at seq %d", e.DecidedAt, g.id, g.revokedSeq)
	case g.used >= g.max:
		return fmt.Sprintf("grant %s allows %d calls; this is one more", g.id, g.max)
	case e.ArgsRedact || len(e.Args) == 0:
		return fmt.Sprintf("granted call without its arguments: grant %s's condition cannot be checked", g.id)
	}
	sum, err := audit.DecodeArgsSHA256(e.ArgsSHA256)
	if err != nil {
		return err.Error()
	}
	if got, err := audit.ArgsSHA256(e.Args); err != nil || got != sum {
		return "args do not match args_sha256"
	}
	var args map[string]any
	if err := json.Unmarshal(e.Args, &args); err != nil || args == nil {
		return "granted call's args are not a JSON object"
	}
	out, _, err := g.cond.Eval(map[string]any{"agent": e.Agent, "tool": e.Tool, "args": args})
	if err != nil {
		return fmt.Sprintf("grant %s's condition cannot be evaluated on the call: %v", g.id, err)
	}
	if ok, isBool := out.(types.Bool); !isBool || !bool(ok) {
		return fmt.Sprintf("the call's arguments do not satisfy grant %s's condition", g.id)
	}
	g.used++
	b.open[grantCallKey(e)]++
	b.calls++
	return ""
}

// execution checks the outcome of a granted call.
func (b *grantBook) execution(e *audit.Entry) string {
	if _, reason := b.in(e); reason != "" {
		return reason
	}
	k := grantCallKey(e)
	if vocab.Level(e.Decision) != vocab.LevelHigh || b.open[k] == 0 {
		return fmt.Sprintf("%s under grant %s follows no call.allowed of the same agent, tool, arguments and grant", e.Kind, e.GrantID)
	}
	if b.open[k]--; b.open[k] == 0 {
		delete(b.open, k)
	}
	return ""
}

// revoked ends a grant.
func (b *grantBook) revoked(e *audit.Entry) string {
	g, reason := b.in(e)
	if g == nil {
		return reason
	}
	at, err := time.Parse(audit.TimeFormat, e.DecidedAt)
	switch {
	case err != nil:
		return fmt.Sprintf("grant.revoked has decided_at %q, not a time in the log's format", e.DecidedAt)
	case e.Approver == "":
		return "grant.revoked does not say who revoked it"
	case g.revokedSeq != 0:
		return fmt.Sprintf("grant %s was already revoked at seq %d", g.id, g.revokedSeq)
	}
	g.revoked, g.revokedSeq = at, e.Seq
	return ""
}

var grantEnv = sync.OnceValues(func() (*cel.Env, error) {
	// The variables a grant condition may use: what every call entry
	// records. (The server compiles it in its policy environment, which
	// declares these the same way.)
	return cel.NewEnv(
		cel.CrossTypeNumericComparisons(true),
		cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("agent", cel.StringType),
		cel.Variable("tool", cel.StringType),
	)
})

func compileCondition(expr string) (cel.Program, error) {
	env, err := grantEnv()
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("empty")
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, iss.Err()
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("not a bool expression")
	}
	return env.Program(ast, cel.CostLimit(1_000_000))
}
