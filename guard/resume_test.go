package guard

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/tools"
	"github.com/mark3labs/mcp-go/mcp"
)

const origin = "http://localhost:8710"

// book is a backend that, like the ledger, keeps each effect under its
// call id in one step, and so can tell after a crash whether a call took
// effect.
type book struct {
	mu      sync.Mutex
	effects []tools.Effect
	mark    int64
}

func (b *book) spec(name string) *tools.Spec {
	return &tools.Spec{
		Def: mcp.NewToolWithRawSchema(name, "keeps a note", json.RawMessage(
			`{"type":"object","properties":{"note":{"type":"string"}},"required":["note"],"additionalProperties":false}`)),
		Prepare: func(_ context.Context, args map[string]any) (*tools.Call, error) {
			return &tools.Call{Args: args, Summary: "note", Details: json.RawMessage(`[{"type":"note"}]`)}, nil
		},
		Run: func(_ context.Context, call *tools.Call) (*tools.Result, error) {
			b.mu.Lock()
			res, ok := b.find(call.ID)
			if !ok {
				res = &tools.Result{Content: map[string]any{"note": call.Args["note"], "call_id": call.ID},
					Record: map[string]any{"note": call.Args["note"], "call_id": call.ID}}
				b.effects = append(b.effects, tools.Effect{Pos: int64(len(b.effects) + 1), CallID: call.ID, Result: res})
			}
			b.mu.Unlock()
			return res, nil
		},
		Recover: func(_ context.Context, call *tools.Call) (*tools.Result, bool, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			res, ok := b.find(call.ID)
			return res, ok, nil
		},
		Journal: b,
	}
}

func (b *book) find(id string) (*tools.Result, bool) {
	for _, e := range b.effects {
		if e.CallID == id {
			return e.Result, true
		}
	}
	return nil, false
}

func (b *book) count() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.effects) }

func (b *book) Effects(_ context.Context, pos int64, limit int) ([]tools.Effect, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.effects[min(pos, int64(len(b.effects))):]
	return slices.Clone(out[:min(limit, len(out))]), nil
}
func (b *book) Last(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return int64(len(b.effects)), nil
}
func (b *book) Recorded(context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mark, nil
}
func (b *book) SetRecorded(_ context.Context, pos int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mark = max(b.mark, pos)
	return nil
}

// process is one life of a server: an approval service and a guard over
// a database, a log and backends that outlive it.
type process struct {
	svc *approval.Service
	g   *Guard
}

type world struct {
	t      *testing.T
	db     *sql.DB
	log    *memLog
	cat    *tools.Catalog
	book   *book
	once   *counter // a backend that cannot tell whether a call took effect
	policy *fixedPolicy
	alice  *approvaltest.SoftKey
}

func newWorld(t *testing.T) *world {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &world{t: t, db: db, log: &memLog{}, cat: tools.NewCatalog(), book: &book{}, once: &counter{},
		policy: &fixedPolicy{d: authz.Decision{Level: config.LevelHigh, Reason: "test", Quorum: 1, Approvers: []string{"alice"}, Wait: authz.WaitPoll}}}
	if err := w.cat.Replace("test", []*tools.Spec{w.book.spec("note"), w.once.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	return w
}

// start begins a life. The previous one must have ended (died or closed).
func (w *world) start() *process {
	w.t.Helper()
	ctx := context.Background()
	svc, err := approval.New(ctx, w.db, w.log, approval.Options{
		RPID: "localhost", Origins: []string{origin}, Approvers: []approval.Approver{{ID: "alice"}},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { svc.Close() })
	g := New(Options{Catalog: w.cat, Policy: w.policy, Audit: w.log, History: w.log, Approvals: svc,
		Tools: map[string]config.Tool{}, ToolWait: time.Second})
	w.t.Cleanup(g.Close)
	if w.alice == nil {
		w.alice = enroll(w.t, svc)
	}
	return &process{svc: svc, g: g}
}

// die ends a life as SIGKILL would: nothing more runs in it, and nothing
// is cancelled on the way out.
func (p *process) die() {
	p.g.stop() // background watchers stop without touching their requests
	p.g.bg.Wait()
	p.svc.Close()
}

func enroll(t *testing.T, svc *approval.Service) *approvaltest.SoftKey {
	t.Helper()
	ctx := context.Background()
	key, err := approvaltest.NewSoftKey("localhost", origin)
	if err != nil {
		t.Fatal(err)
	}
	link, err := svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	token := link[strings.LastIndex(link, "/")+1:]
	opts, err := svc.BeginEnrollment(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := key.Create(opts.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.FinishEnrollment(ctx, token, opts.Ceremony, cred); err != nil {
		t.Fatal(err)
	}
	return key
}

func (w *world) approve(p *process, id string) {
	w.t.Helper()
	ctx := context.Background()
	opts, err := p.svc.BeginDecision(ctx, id, digest.Approve)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := p.svc.FinishDecision(ctx, id, opts.Ceremony, w.alice.Get(opts.PublicKey.Challenge.String())); err != nil {
		w.t.Fatal(err)
	}
}

// raise has the guard raise a poll-mode request and returns its id.
func (w *world) raise(p *process, tool string, args map[string]any) string {
	w.t.Helper()
	res := p.g.Handle(context.Background(), Call{Tool: tool, Agent: "bot", Args: args})
	var out struct {
		Status string `json:"status"`
		ID     string `json:"auth_req_id"`
	}
	if err := json.Unmarshal([]byte(text(res)), &out); err != nil || out.Status != "authorization_pending" {
		w.t.Fatalf("poll-mode call: %s (%v)", text(res), err)
	}
	return out.ID
}

func (w *world) waitState(p *process, id, state string) *approval.Request {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := p.svc.Get(context.Background(), id)
		if err != nil {
			w.t.Fatal(err)
		}
		if r.State == state {
			return r
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("request %s is %s (%s), want %s", id, r.State, r.Reason, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) kinds(id string) []string {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	var out []string
	for _, e := range w.log.entries {
		if e.RequestID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

func TestRestartCancelsBlockModeAndRunsPollModeOnceApproved(t *testing.T) {
	w := newWorld(t)
	p1 := w.start()
	ctx := context.Background()
	poll := w.raise(p1, "note", map[string]any{"note": "keep me"})
	block, err := p1.svc.Create(ctx, approval.NewRequest{Tool: "note", Agent: "bot", Args: json.RawMessage(`{"note":"x"}`),
		Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := p2.svc.Get(ctx, block.ID); r.State != approval.StateCancelled || r.Reason != approval.ReasonRestarted {
		t.Fatalf("block-mode request after restart: %s %q", r.State, r.Reason)
	}
	if w.book.count() != 0 {
		t.Fatal("ran before approval")
	}
	w.approve(p2, poll)
	r := w.waitState(p2, poll, approval.StateExecuted)
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
	var res map[string]any
	if err := json.Unmarshal(r.Result, &res); err != nil || res["note"] != "keep me" || res["call_id"] != "request:"+poll {
		t.Fatalf("result %s (%v)", r.Result, err)
	}
	want := []string{audit.KindApprovalRequested, audit.KindApprovalAssertion, audit.KindApprovalApproved, audit.KindCallExecuted}
	if got := w.kinds(poll); !slices.Equal(got, want) {
		t.Fatalf("log of the resumed request %v, want %v", got, want)
	}
}

// A claimed request whose process died: the backend that can tell gets
// its real outcome recorded, or runs once if it never took effect; the
// one that cannot is interrupted and never runs again.
func TestRestartSettlesClaimedRequests(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	p1 := w.start()
	// Each request is approved and claimed, as a run does first; then the
	// process dies: after the effect (done), before it (never), or in a
	// backend that cannot tell (unknown).
	claimed := func(tool, args string) string {
		r, err := p1.svc.Create(ctx, approval.NewRequest{Tool: tool, Agent: "bot", Args: json.RawMessage(args),
			Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitPoll})
		if err != nil {
			t.Fatal(err)
		}
		w.approve(p1, r.ID)
		if err := p1.svc.BeginExecution(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	doneID := claimed("note", `{"note":"paid"}`)
	neverID := claimed("note", `{"note":"never"}`)
	unknownID := claimed("pay", `{"amount":5,"to":"X"}`)
	w.book.spec("note").Run(ctx, &tools.Call{ID: "request:" + doneID, Args: map[string]any{"note": "paid"}})
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	r := w.waitState(p2, doneID, approval.StateExecuted)
	if !strings.Contains(string(r.Result), `"note":"paid"`) {
		t.Fatalf("recovered result %s", r.Result)
	}
	w.waitState(p2, neverID, approval.StateExecuted)
	if w.book.count() != 2 {
		t.Fatalf("book has %d effects, want the recovered one and the one run now", w.book.count())
	}
	for _, id := range []string{doneID, neverID} {
		want := []string{audit.KindApprovalRequested, audit.KindApprovalAssertion, audit.KindApprovalApproved, audit.KindCallExecuted}
		if got := w.kinds(id); !slices.Equal(got, want) {
			t.Errorf("log of %s: %v, want %v", id, got, want)
		}
	}
	r = w.waitState(p2, unknownID, approval.StateInterrupted)
	if w.once.count() != 0 {
		t.Fatal("a backend that cannot tell ran after the restart")
	}
	if !strings.Contains(r.Reason, "not run again") {
		t.Fatalf("interrupted reason %q", r.Reason)
	}
	if kinds := w.kinds(unknownID); kinds[len(kinds)-1] != audit.KindCallInterrupted {
		t.Fatalf("log of the interrupted request %v", kinds)
	}
	ps, err := p2.svc.Poll(ctx, unknownID, "bot")
	if err != nil || ps.Status != approval.PollInterrupted {
		t.Fatalf("poll %+v %v", ps, err)
	}
}

// A routine call whose effect committed while its record was lost gets
// its record at the next start, with the agent and arguments of its
// call.allowed entry; recorded effects are not recorded again.
func TestRestartRecordsEffectsTheLogLacks(t *testing.T) {
	w := newWorld(t)
	w.policy.d = authz.Decision{Level: config.LevelLow}
	ctx := context.Background()
	p1 := w.start()
	for _, note := range []string{"one", "two"} {
		if res := p1.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": note}}); res.IsError {
			t.Fatal(text(res))
		}
	}
	w.log.failKind = audit.KindCallExecuted
	p1.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "lost"}})
	p1.g.advanceMarks(ctx) // an unrecorded effect keeps the mark where it is
	if w.book.mark != 0 {
		t.Fatalf("mark moved to %d past an unrecorded effect", w.book.mark)
	}
	w.log.failKind = ""
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	var executed []audit.Entry
	for _, e := range w.log.entries {
		if e.Kind == audit.KindCallExecuted {
			executed = append(executed, e)
		}
	}
	if len(executed) != 3 {
		t.Fatalf("%d call.executed entries for 3 effects", len(executed))
	}
	lost := executed[2]
	if lost.Agent != "bot" || string(lost.Args) != `{"note":"lost"}` || !strings.HasPrefix(lost.Reason, "recorded at start") {
		t.Fatalf("recovered entry %+v", lost)
	}
	if w.book.mark != 3 {
		t.Fatalf("mark %d after reconciling, want 3", w.book.mark)
	}
	// Reconciling again finds nothing more to record.
	p2.die()
	p3 := w.start()
	n := len(w.log.entries)
	if err := p3.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if len(w.log.entries) != n {
		t.Fatalf("a second start recorded %d more entries", len(w.log.entries)-n)
	}
}

func TestShutdownCancelsBlockWaitsKeepsPollAndRefusesNewCalls(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	p := w.start()
	poll := w.raise(p, "note", map[string]any{"note": "later"})
	w.policy.mu.Lock()
	w.policy.d.Wait = authz.WaitBlock
	w.policy.mu.Unlock()
	answer := make(chan *mcp.CallToolResult, 1)
	go func() {
		answer <- p.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "now"}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.g.mu.Lock()
		n := len(p.g.waiting)
		p.g.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("block-mode call never waited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.g.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	res := <-answer
	if !res.IsError || !strings.Contains(text(res), "cancelled: server shutting down") {
		t.Fatalf("the waiting agent was told %q", text(res))
	}
	if r, _ := p.svc.Get(ctx, poll); r.State != approval.StatePending {
		t.Fatalf("poll-mode request after shutdown: %s", r.State)
	}
	res = p.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "late"}})
	if !res.IsError || !strings.Contains(text(res), "shutting down") {
		t.Fatalf("call during shutdown: %q", text(res))
	}
	if e := w.log.last(audit.KindCallRejected); e.Reason != "server shutting down" {
		t.Fatalf("refusal not recorded: %+v", e)
	}
}

// A resumed request whose tool does not come back (an upstream that does
// not reconnect) fails clearly instead of waiting for ever.
func TestResumedRequestFailsWhenItsToolNeverReturns(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	p1 := w.start()
	id := w.raise(p1, "note", map[string]any{"note": "gone"})
	p1.die()
	if err := w.cat.Replace("test", []*tools.Spec{w.once.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	w.approve(p2, id)
	r := w.waitState(p2, id, approval.StateFailed)
	if !strings.Contains(string(r.Result), "tool note is not available") {
		t.Fatalf("result %s", r.Result)
	}
	if e := w.log.last(audit.KindCallFailed); e.RequestID != id {
		t.Fatalf("failure not recorded: %+v", e)
	}
}
