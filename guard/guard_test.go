package guard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign"
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// fixedPolicy decides every call the same way and remembers what it saw.
type fixedPolicy struct {
	mu   sync.Mutex
	d    authz.Decision
	seen []authz.Input
}

func (p *fixedPolicy) UsesUsage(string) bool { return false }

func (p *fixedPolicy) MayCountersign(string, bool) bool { return true }

func (p *fixedPolicy) Decide(in authz.Input) authz.Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, in)
	return p.d
}

// memLog is an audit log in memory that can be made to fail.
type memLog struct {
	mu       sync.Mutex
	entries  []audit.Entry
	fail     bool
	failKind vocab.Kind // entries of this kind fail to append
}

func (l *memLog) Append(_ context.Context, e audit.Entry) (audit.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail || (l.failKind != "" && e.Kind == l.failKind) {
		return audit.Entry{}, errors.New("disk full")
	}
	e.Seq = int64(len(l.entries) + 1)
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(audit.TimeFormat)
	}
	l.entries = append(l.entries, e)
	return e, nil
}

func (l *memLog) LastSeq(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.entries)), nil
}

func (l *memLog) Since(_ context.Context, seq int64, limit int) ([]audit.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq >= int64(len(l.entries)) {
		return nil, nil
	}
	out := l.entries[seq:]
	if len(out) > limit {
		out = out[:limit]
	}
	return append([]audit.Entry(nil), out...), nil
}

func (l *memLog) kinds() []vocab.Kind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []vocab.Kind
	for _, e := range l.entries {
		out = append(out, e.Kind)
	}
	return out
}

func (l *memLog) last(kind vocab.Kind) audit.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.entries) - 1; i >= 0; i-- {
		if l.entries[i].Kind == kind {
			return l.entries[i]
		}
	}
	return audit.Entry{}
}

// humans is an approval service in memory: a test decides each request by
// sending its final state on decide.
type humans struct {
	mu        sync.Mutex
	created   []approval.NewRequest
	decide    chan vocab.State // the final state of the next request waited on
	claimed   int
	finished  []bool
	cancelled []string    // reasons
	log       *memLog     // where Finish records the outcome, as the real service does through its outbox
	state     vocab.State // what Get says; settle sets it
	hooks     []func(string)
}

// settle decides the request as the page would, for a caller that is not
// waiting (poll mode): Get reports state, and the OnChange hooks hear it.
func (h *humans) settle(state vocab.State) {
	h.mu.Lock()
	h.state = state
	hooks := h.hooks
	h.mu.Unlock()
	for _, fn := range hooks {
		fn("req-1")
	}
}

func (h *humans) Stored(_ context.Context, id string) (*approval.Unfinished, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	state := h.state
	if state == "" {
		state = vocab.StatePending
	}
	u := &approval.Unfinished{Request: approval.Request{ID: id, State: state}}
	if n := len(h.created); n > 0 {
		c := h.created[n-1]
		u.Tool, u.Agent, u.Level, u.Args = c.Tool, c.Agent, c.Level, c.Args.JSON()
	}
	return u, nil
}

func (h *humans) OnChange(fn func(string)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks = append(h.hooks, fn)
}

func (h *humans) Create(_ context.Context, r approval.NewRequest) (*approval.Request, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.created = append(h.created, r)
	// Each its own id, as the service gives: a share is given back once per id.
	return &approval.Request{ID: fmt.Sprintf("req-%d", len(h.created)), State: vocab.StatePending, ExpiresAt: time.Now().Add(time.Minute),
		Interval: 5 * time.Second, Code: "ABC123"}, nil
}

func (h *humans) Wait(ctx context.Context, id string) (*approval.Request, error) {
	select {
	case state := <-h.decide:
		return &approval.Request{ID: id, State: state, DecidedBy: "alice"}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *humans) BeginExecution(context.Context, string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.claimed > 0 {
		return approval.ErrNotApproved
	}
	h.claimed++
	return nil
}

func (h *humans) Finish(ctx context.Context, id string, o approval.Outcome) error {
	h.mu.Lock()
	h.finished = append(h.finished, o.State == vocab.StateExecuted)
	h.mu.Unlock()
	if o.Record.Kind != "" {
		o.Record.RequestID = id
		_, err := h.log.Append(ctx, o.Record)
		return err
	}
	return nil
}

func (h *humans) Poll(context.Context, string, string) (*approval.PollStatus, error) {
	return &approval.PollStatus{Status: "authorization_pending"}, nil
}

func (h *humans) Cancel(_ context.Context, id, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cancelled = append(h.cancelled, reason)
	select {
	case h.decide <- vocab.StateCancelled:
	default:
	}
	return nil
}

func (h *humans) Restart(context.Context) ([]string, error) { return nil, nil }

func (h *humans) Detach(context.Context, string) error { return nil }

func (h *humans) Unfinished(context.Context) ([]approval.Unfinished, error) { return nil, nil }

// The task methods: this stand-in raises no tasks.
func (h *humans) Own(context.Context, string, string, string) (*approval.Request, error) {
	return nil, approval.ErrNotFound
}

func (h *humans) ListOwn(context.Context, string, string, string, int) ([]*approval.Request, error) {
	return nil, nil
}

func (h *humans) Await(context.Context, string, func(*approval.Request) bool) (*approval.Request, error) {
	return nil, approval.ErrNotFound
}

// counter is a tool that counts its runs and keeps the arguments it ran on.
type counter struct {
	mu     sync.Mutex
	runs   int
	ran    []map[string]any
	result func(ctx context.Context) (*tools.Result, error)
}

func (c *counter) spec(name string) *tools.Spec {
	return &tools.Spec{
		Def: mcp.NewToolWithRawSchema(name, "test tool", json.RawMessage(
			`{"type":"object","properties":{"amount":{"type":"number","exclusiveMinimum":0},"to":{"type":"string"}},`+
				`"required":["amount"],"additionalProperties":false}`)),
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			if to, _ := args["to"].(string); to == "nobody" {
				return nil, &tools.ArgError{Field: "to", Msg: "unknown payee"}
			}
			out := map[string]any{"to": "default payee"}
			for k, v := range args {
				out[k] = v
			}
			return &tools.Call{Args: out, Summary: "pay", Details: json.RawMessage(`[{"type":"test"}]`)}, nil
		},
		Run: func(ctx context.Context, call *tools.Call) (*tools.Result, error) {
			c.mu.Lock()
			c.runs++
			c.ran = append(c.ran, call.Args)
			c.mu.Unlock()
			if c.result != nil {
				return c.result(ctx)
			}
			return &tools.Result{Content: map[string]any{"ok": true}, Record: map[string]any{"ok": true}}, nil
		},
	}
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs
}

type fixture struct {
	g      *Guard
	log    *memLog
	policy *fixedPolicy
	humans *humans
	tool   *counter
	cat    *tools.Catalog
}

func newFixture(t *testing.T, level vocab.Level) *fixture {
	t.Helper()
	log := &memLog{}
	f := &fixture{
		log:    log,
		policy: &fixedPolicy{d: authz.Decision{Level: level, Reason: "test says " + string(level), Quorum: 1, Approvers: []string{"alice"}, Wait: authz.WaitBlock}},
		humans: &humans{decide: make(chan vocab.State, 1), log: log},
		tool:   &counter{},
		cat:    tools.NewCatalog(),
	}
	if err := f.cat.Replace("test", []*tools.Spec{f.tool.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	f.g = New(Options{Catalog: f.cat, Policy: f.policy, Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans,
		Tools: map[string]config.Tool{"pay": {}}})
	t.Cleanup(f.g.Close)
	return f
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func TestUnknownToolIsRejectedAndRecorded(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	res := f.g.Handle(context.Background(), Call{Tool: "launch_missiles", Agent: "bot"})
	if !res.IsError || !strings.Contains(text(res), `unknown tool "launch_missiles"`) {
		t.Fatalf("result %q", text(res))
	}
	e := f.log.last(vocab.KindCallRejected)
	if e.Tool != "launch_missiles" || e.Agent != "bot" || e.Reason != "unknown tool" {
		t.Errorf("entry %+v", e)
	}
}

func TestBadArgumentsNeverReachPolicyOrTool(t *testing.T) {
	for _, tc := range []struct {
		name string
		args any
		want string
	}{
		{"not an object", []any{1}, "invalid arguments: expected a JSON object"},
		{"schema", map[string]any{"amount": -5.0}, "invalid arguments: amount: must be greater than 0"},
		{"unknown field", map[string]any{"amount": 1.0, "evil": true}, `invalid arguments: unknown argument "evil"`},
		{"missing", map[string]any{}, `invalid arguments: missing required argument "amount"`},
		{"wrong type", map[string]any{"amount": "5"}, "invalid arguments: amount: must be a number, not a string"},
		{"prepare refuses", map[string]any{"amount": 1.0, "to": "nobody"}, "invalid arguments: to: unknown payee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, vocab.LevelLow)
			res := f.g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: tc.args})
			if !res.IsError || text(res) != tc.want {
				t.Fatalf("result %q, want %q", text(res), tc.want)
			}
			// The auditor reads the same sentence the agent did, with no Go
			// values in it (and the size of arguments the log does not keep).
			if e := f.log.last(vocab.KindCallRejected); e.Reason != tc.want && !strings.HasPrefix(e.Reason, tc.want+" (arguments: ") {
				t.Errorf("audit reason %q, want %q", e.Reason, tc.want)
			}
			if f.tool.count() != 0 || len(f.policy.seen) != 0 {
				t.Errorf("ran %d times, policy asked %d times", f.tool.count(), len(f.policy.seen))
			}
			if got := f.log.kinds(); len(got) != 1 || got[0] != vocab.KindCallRejected {
				t.Errorf("log %v, want one call.rejected", got)
			}
		})
	}
}

func TestRoutineCallRunsOnceOnTheCanonicalArguments(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"to": "Acme", "amount": 12.5}})
	if res.IsError {
		t.Fatal(text(res))
	}
	if f.tool.count() != 1 {
		t.Fatalf("ran %d times", f.tool.count())
	}
	if got := f.log.kinds(); !slices.Equal(got, []vocab.Kind{vocab.KindCallAllowed, vocab.KindCallExecuted}) {
		t.Fatalf("log %v", got)
	}
	want := `{"amount":12.5,"to":"Acme"}`
	sum := sha256.Sum256([]byte(want))
	allowed, executed := f.log.entries[0], f.log.entries[1]
	if string(allowed.Args) != want || allowed.ArgsSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("call.allowed args %s sha %s, want %s", allowed.Args, allowed.ArgsSHA256, want)
	}
	// Stored once: the outcome names the call.allowed that holds them.
	if len(executed.Args) != 0 || executed.ArgsSHA256 != allowed.ArgsSHA256 || executed.ArgsSeq != allowed.Seq || allowed.Seq == 0 {
		t.Errorf("call.executed args %s sha %s args_seq %d, want no args, the same sha and args_seq %d", executed.Args, executed.ArgsSHA256, executed.ArgsSeq, allowed.Seq)
	}
	if in := f.policy.seen[0]; in.Agent != "bot" || in.Args["to"] != "Acme" {
		t.Errorf("policy saw %+v", in)
	}
}

func TestDefaultsAppliedByPrepareAreWhatIsRecorded(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	f.g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 1.0}})
	if got := string(f.log.last(vocab.KindCallAllowed).Args); got != `{"amount":1,"to":"default payee"}` {
		t.Errorf("recorded args %s", got)
	}
}

func TestUnrecordableCallDoesNotRun(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	f.log.fail = true
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if !res.IsError || f.tool.count() != 0 {
		t.Fatalf("result %q, ran %d", text(res), f.tool.count())
	}
}

func TestDenyNeverRuns(t *testing.T) {
	f := newFixture(t, vocab.LevelDeny)
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if !res.IsError || !strings.Contains(text(res), "denied by policy: test says deny") || f.tool.count() != 0 {
		t.Fatalf("result %q, ran %d", text(res), f.tool.count())
	}
	if e := f.log.last(vocab.KindCallDenied); e.Decision != string(vocab.LevelDeny) {
		t.Errorf("entry %+v", e)
	}
}

func TestApprovedCallRunsOnceOnTheApprovedBytes(t *testing.T) {
	f := newFixture(t, vocab.LevelHigh)
	f.humans.decide <- vocab.StateApproved
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 20000.0, "to": "X"}})
	if res.IsError {
		t.Fatal(text(res))
	}
	if f.tool.count() != 1 {
		t.Fatalf("ran %d times", f.tool.count())
	}
	approved := f.humans.created[0].Args.JSON()
	executed := f.log.last(vocab.KindCallExecuted)
	if string(approved) != string(executed.Args) || string(approved) != `{"amount":20000,"to":"X"}` {
		t.Errorf("approved %s, executed %s", approved, executed.Args)
	}
	if executed.RequestID != "req-1" {
		t.Errorf("call.executed names request %q", executed.RequestID)
	}
	if len(f.humans.finished) != 1 || !f.humans.finished[0] {
		t.Errorf("finished %v", f.humans.finished)
	}
}

func TestDeniedOrExpiredCallNeverRuns(t *testing.T) {
	for _, state := range []vocab.State{vocab.StateDenied, vocab.StateExpired, vocab.StateCancelled} {
		t.Run(string(state), func(t *testing.T) {
			f := newFixture(t, vocab.LevelHigh)
			f.humans.decide <- state
			res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
			if !res.IsError || f.tool.count() != 0 {
				t.Fatalf("result %q, ran %d", text(res), f.tool.count())
			}
		})
	}
}

func TestWaitingCallerIsKeptInformedUntilTheDecision(t *testing.T) {
	f := newFixture(t, vocab.LevelHigh)
	var began, ended bool
	go func() { time.Sleep(20 * time.Millisecond); f.humans.decide <- vocab.StateApproved }()
	f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0},
		Waiting: func(context.Context, *Request) func() {
			began = true
			return func() { ended = true }
		}})
	if !began || !ended {
		t.Errorf("waiting began %v ended %v", began, ended)
	}
}

func TestPollModeReturnsAtOnceAndRunsOnceWhenApproved(t *testing.T) {
	f := newFixture(t, vocab.LevelHigh)
	f.policy.d.Wait = authz.WaitPoll
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if res.IsError || !strings.Contains(text(res), "authorization_pending") {
		t.Fatalf("result %q", text(res))
	}
	if f.tool.count() != 0 {
		t.Fatal("ran before approval")
	}
	f.humans.settle(vocab.StateApproved)
	deadline := time.Now().Add(10 * time.Second)
	for f.tool.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	f.g.Close() // waits for the background execution to finish
	if f.tool.count() != 1 || len(f.humans.finished) != 1 {
		t.Errorf("ran %d times, finished %v", f.tool.count(), f.humans.finished)
	}
}

func TestPanickingToolIsRecordedAsFailed(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	f.tool.result = func(context.Context) (*tools.Result, error) { panic("boom") }
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if !res.IsError || !strings.Contains(f.log.last(vocab.KindCallFailed).Reason, "panicked: boom") {
		t.Fatalf("result %q, log %v", text(res), f.log.kinds())
	}
}

func TestUpstreamResultPassesUnchangedAndIsHashed(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	upstream := &mcp.CallToolResult{
		Content:           []mcp.Content{mcp.NewTextContent("<b>as is</b>")},
		StructuredContent: map[string]any{"n": 1.0},
		IsError:           true,
	}
	f.tool.result = func(context.Context) (*tools.Result, error) { return &tools.Result{MCP: upstream}, nil }
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if res != upstream {
		t.Fatalf("result changed: %+v", res)
	}
	raw, _ := json.Marshal(upstream)
	sum := sha256.Sum256(raw)
	var rec map[string]any
	json.Unmarshal(f.log.last(vocab.KindCallExecuted).Result, &rec)
	if rec["result_sha256"] != hex.EncodeToString(sum[:]) || rec["is_error"] != true {
		t.Errorf("recorded %v", rec)
	}
}

func TestApprovedRunIsNotCancelledWhenItsCallerLeaves(t *testing.T) {
	f := newFixture(t, vocab.LevelHigh)
	ctx, cancel := context.WithCancel(context.Background())
	var sawCancel bool
	f.tool.result = func(runCtx context.Context) (*tools.Result, error) {
		cancel() // the agent leaves once its approved call has started
		select {
		case <-runCtx.Done():
			sawCancel = true
		case <-time.After(50 * time.Millisecond):
		}
		return &tools.Result{Content: "done"}, nil
	}
	f.humans.decide <- vocab.StateApproved
	f.g.Handle(ctx, Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if sawCancel {
		t.Error("the approved run saw its caller's cancellation")
	}
	if k := f.log.kinds(); k[len(k)-1] != vocab.KindCallExecuted {
		t.Errorf("log %v, want it to end with call.executed", k)
	}
}

func TestRunErrorsAreRecordedForWhatTheySayAboutTheAction(t *testing.T) {
	for _, c := range []struct {
		name   string
		kind   vocab.Kind
		reason string
		err    error
		counts bool // the call may have acted: it stays counted as run
	}{
		{"upstream answered with an error", vocab.KindCallFailed, "invalid params", errors.New("invalid params"), false},
		{"never sent", vocab.KindCallFailed, "not sent: upstream down",
			&tools.NotSentError{Err: errors.New("upstream down")}, false},
		{"sent, no answer", vocab.KindCallInterrupted, "outcome unknown: connection lost",
			&tools.UnknownOutcomeError{Err: errors.New("connection lost")}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, level := range []vocab.Level{vocab.LevelLow, vocab.LevelHigh} {
				f := newFixture(t, level)
				f.tool.result = func(context.Context) (*tools.Result, error) { return nil, c.err }
				if level == vocab.LevelHigh {
					f.humans.decide <- vocab.StateApproved
				}
				res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
				if !res.IsError {
					t.Fatalf("%s: agent got success", level)
				}
				last := f.log.entries[len(f.log.entries)-1]
				if last.Kind != c.kind || last.Reason != c.reason {
					t.Errorf("%s: recorded %s %q, want %s %q", level, last.Kind, last.Reason, c.kind, c.reason)
				}
				if c.kind == vocab.KindCallInterrupted && !strings.Contains(text(res), "outcome is unknown") {
					t.Errorf("%s: the agent was told %q", level, text(res))
				}
				if level == vocab.LevelHigh && f.humans.finished[0] {
					t.Errorf("%s: request finished as executed", level)
				}
			}
		})
	}
}

func TestPureRoutineCallIsRecordedOnceAfterItRan(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	spec, _ := f.cat.Lookup("pay")
	spec.Pure = true
	res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
	if res.IsError || f.tool.count() != 1 {
		t.Fatalf("result %q, ran %d", text(res), f.tool.count())
	}
	if got := f.log.kinds(); !slices.Equal(got, []vocab.Kind{vocab.KindCallExecuted}) {
		t.Fatalf("log %v, want one call.executed", got)
	}
	if e := f.log.last(vocab.KindCallExecuted); e.Decision != string(vocab.LevelLow) || e.Reason != "test says low" {
		t.Errorf("call.executed does not carry the decision: %+v", e)
	}
}

func TestResultIsWithheldWhenItsRecordCannotBeMade(t *testing.T) {
	for _, pure := range []bool{true, false} {
		f := newFixture(t, vocab.LevelLow)
		spec, _ := f.cat.Lookup("pay")
		spec.Pure = pure
		f.tool.result = func(context.Context) (*tools.Result, error) {
			f.log.mu.Lock()
			f.log.fail = true // the log breaks while the tool runs
			f.log.mu.Unlock()
			return &tools.Result{Content: "secret data"}, nil
		}
		res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0}})
		if !res.IsError || strings.Contains(text(res), "secret data") || !strings.Contains(text(res), "withheld") {
			t.Errorf("pure %v: result %q", pure, text(res))
		}
	}
}

func nested(levels int) map[string]any {
	v := map[string]any{"amount": 1.0}
	for range levels {
		v = map[string]any{"x": v}
	}
	return v
}

func TestOversizedOrDeepArgumentsAreRefusedFirstAndNotKept(t *testing.T) {
	junk := strings.Repeat("A", 70<<10)
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"large", map[string]any{"amount": 1.0, "to": junk}, "larger than 65536 bytes"},
		{"many keys", func() map[string]any {
			m := map[string]any{}
			for i := range 20000 {
				m[fmt.Sprintf("k%05d", i)] = i
			}
			return m
		}(), "larger than 65536 bytes"},
		{"deep", nested(5000), "nested deeper than 32 levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, vocab.LevelLow)
			res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: tc.args})
			if !res.IsError || !strings.Contains(text(res), tc.want) {
				t.Fatalf("result %q", text(res))
			}
			if f.tool.count() != 0 || len(f.policy.seen) != 0 {
				t.Fatal("an oversized call went past the limits")
			}
			e := f.log.last(vocab.KindCallRejected)
			if e.Args != nil || len(e.ArgsSHA256) != 64 || !strings.Contains(e.Reason, "bytes, not kept") {
				t.Errorf("rejected entry keeps %d bytes of args, sha %q, reason %q", len(e.Args), e.ArgsSHA256, e.Reason)
			}
		})
	}
	// Just inside the limits passes.
	f := newFixture(t, vocab.LevelLow)
	if res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: map[string]any{"amount": 1.0, "to": strings.Repeat("A", 60<<10)}}); res.IsError {
		t.Errorf("60 KiB argument refused: %s", text(res))
	}
}

// A flood of 10,000 refused calls, each carrying 4 KiB of junk, grows the
// real signed log by a bounded record per call, not by the junk.
func TestRefusedFloodGrowsTheLogByABoundedAmount(t *testing.T) {
	dir := t.TempDir()
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditpg.Open(context.Background(), db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	f := newFixture(t, vocab.LevelLow)
	g := New(Options{Catalog: f.cat, Policy: f.policy, Audit: log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans})
	const calls = 10000
	junk := strings.Repeat("J", 4<<10)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.Handle(context.Background(), Call{Tool: "pay", Agent: "flood", Args: map[string]any{"amount": -1.0, "to": junk, "n": float64(i)}})
		}()
	}
	wg.Wait()
	var bytes int
	if err := db.QueryRow(`SELECT COALESCE(SUM(LENGTH(body)), 0) FROM audit_entries`).Scan(&bytes); err != nil {
		t.Fatal(err)
	}
	if per := bytes / calls; per > 1024 {
		t.Errorf("%d refused calls grew the log by %d bytes, %d per call; want at most 1 KiB each", calls, bytes, per)
	}
	t.Logf("%d refused calls of 4 KiB each: %d bytes of log entries", calls, bytes)
}

// The shipped policy, compiled for real, against a transfer-like tool.
func shippedPolicy(t *testing.T) *authz.Policy {
	t.Helper()
	c, err := config.Parse(countersign.DefaultConfig(), "shipped")
	if err != nil {
		t.Fatal(err)
	}
	p, err := authz.Compile(c.Tools, c.Approvers, authz.Options{Facts: map[string][]string{"transfer": {"counterparty"}, "read_secret": {"secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func payTo(payee string) *tools.Spec {
	return &tools.Spec{
		Def: mcp.NewToolWithRawSchema("transfer", "pay", json.RawMessage(`{"type":"object"}`)),
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			amount, _ := args["amount"].(float64)
			return &tools.Call{Args: args, Value: &tools.Value{Amount: amount, Currency: "USD", Counterparty: payee},
				Facts: map[string]any{"counterparty": map[string]any{"known": true}}}, nil
		},
		Run: func(context.Context, *tools.Call) (*tools.Result, error) { return &tools.Result{Content: "paid"}, nil },
	}
}

func TestSplitTransfersAreJudgedAsTheirSumAndRefusalsStopCounting(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	f.cat.Replace("test", []*tools.Spec{payTo("Acme Supplies")})
	f.humans.decide = make(chan vocab.State, 100)
	for range 10 {
		f.humans.decide <- vocab.StateDenied
	}
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans})
	var wg sync.WaitGroup
	for range 11 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 9999.0}})
		}()
	}
	wg.Wait()
	kinds := map[vocab.Kind]int{}
	for _, k := range f.log.kinds() {
		kinds[k]++
	}
	if kinds[vocab.KindCallExecuted] != 1 || len(f.humans.created) != 10 {
		t.Fatalf("%d ran and %d waited for a human, want 1 and 10 (log %v)", kinds[vocab.KindCallExecuted], len(f.humans.created), kinds)
	}
	// The ten denied never ran and no longer count; the one that ran does.
	in := map[string]any{"amount": 1.0}
	g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: in})
	if got := f.policy.seen; len(got) != 0 {
		t.Fatal("the fixture's policy was used")
	}
	if kinds2 := f.log.kinds(); kinds2[len(kinds2)-1] != vocab.KindCallExecuted {
		t.Errorf("1 more after 9,999 ran and 99,990 were denied: %v, want it to run", kinds2[len(kinds2)-1])
	}
	f.humans.decide <- vocab.StateDenied
	g.Handle(context.Background(), Call{Tool: "transfer", Agent: "salami", Args: map[string]any{"amount": 1.0 + 9999}})
	if len(f.humans.created) != 11 {
		t.Errorf("10,000 after 10,000 moved did not wait for a human")
	}
	// Another agent, or another payee, starts from nothing.
	g.Handle(context.Background(), Call{Tool: "transfer", Agent: "other", Args: map[string]any{"amount": 9999.0}})
	if len(f.humans.created) != 11 {
		t.Errorf("another agent's 9,999 waited")
	}
}

func TestUsageIsRestoredFromTheLog(t *testing.T) {
	f := newFixture(t, vocab.LevelLow)
	f.cat.Replace("test", []*tools.Spec{payTo("Acme Supplies")})
	g := New(Options{Catalog: f.cat, Policy: shippedPolicy(t), Audit: f.log, Requests: f.humans, Runs: f.humans, Recovery: f.humans, Tasks: f.humans})
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339Nano) }
	args := json.RawMessage(`{"amount":6000}`)
	g.RestoreUsage(context.Background(), []audit.Entry{
		{Kind: vocab.KindCallExecuted, Tool: "transfer", Agent: "a", Args: args, Time: at(25 * time.Hour)}, // too old
		{Kind: vocab.KindCallExecuted, Tool: "transfer", Agent: "a", Args: args, Time: at(time.Hour)},
		{Kind: vocab.KindApprovalRequested, Tool: "transfer", Agent: "a", Args: args, RequestID: "r1", Time: at(time.Minute)},
		{Kind: vocab.KindApprovalDenied, Tool: "transfer", Agent: "a", RequestID: "r1", Time: at(time.Minute)},
	})
	g.usage.mu.Lock()
	u := g.usage.facts(keysOf("a", "transfer", &tools.Value{Currency: "USD", Counterparty: "acme supplies"}), now)
	g.usage.mu.Unlock()
	if u["agent_payee_amount_24h"] != 6000.0 || u["calls_1h"] != 0.0 && u["calls_1h"] != 1.0 {
		t.Errorf("restored usage %v, want 6000 moved (one executed; the old one and the denied one do not count)", u)
	}
	for _, k := range authz.UsageKeys() {
		if _, ok := u[k]; !ok {
			t.Errorf("usage lacks %s", k)
		}
	}
}

func TestNumbersADoubleCannotHoldAreRefusedNotChanged(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string // "" = accepted
	}{
		{`{"amount":12.5}`, ""},
		{`{"amount":0.01}`, ""}, // not a binary fraction, but it comes back as 0.01
		{`{"amount":19.99}`, ""},
		{`{"amount":1e2}`, ""},
		{`{"amount":9007199254740992}`, ""}, // 2^53 is exact
		{`{"amount":12345678901234567890}`, "amount: the number 12345678901234567890 cannot be held exactly"},
		{`{"amount":9007199254740993}`, "amount: the number 9007199254740993 cannot be held exactly"},
		{`{"amount":0.1000000000000000055511151231257827}`, "cannot be held exactly"},
		{`{"amount":1,"to":"x","n":[1,{"deep":123456789012345678901234567890}]}`, "n[1].deep: the number"},
	} {
		f := newFixture(t, vocab.LevelLow)
		var args map[string]any
		json.Unmarshal([]byte(tc.raw), &args)
		res := f.g.Handle(context.Background(), Call{Tool: "pay", Args: args, Raw: json.RawMessage(tc.raw)})
		switch {
		case tc.want == "" && res.IsError && !strings.Contains(text(res), "additional") && !strings.Contains(text(res), "unknown argument"):
			t.Errorf("%s refused: %s", tc.raw, text(res))
		case tc.want != "" && (!res.IsError || !strings.Contains(text(res), tc.want)):
			t.Errorf("%s: %q, want it refused with %q", tc.raw, text(res), tc.want)
		case tc.want != "" && f.tool.count() != 0:
			t.Errorf("%s ran", tc.raw)
		}
	}
}
