package guard

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/authz"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/vocab"
	"github.com/mark3labs/mcp-go/mcp"
)

// book is a backend that, like the ledger, keeps each effect under its
// call id in one step, and so can tell after a crash whether a call took
// effect. A call to a book with hold set waits for it to close before
// doing anything, and then fails: a process killed meanwhile never acted.
type book struct {
	mu      sync.Mutex
	effects map[string]*tools.Result
	hold    chan struct{}
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
			hold := b.hold
			b.mu.Unlock()
			if hold != nil {
				<-hold
				return nil, errors.New("released")
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if res, ok := b.effects[call.ID]; ok {
				return res, nil
			}
			res := &tools.Result{Content: map[string]any{"note": call.Args["note"], "call_id": call.ID},
				Record: map[string]any{"note": call.Args["note"], "call_id": call.ID}}
			if b.effects == nil {
				b.effects = map[string]*tools.Result{}
			}
			b.effects[call.ID] = res
			return res, nil
		},
		Recover: func(_ context.Context, call *tools.Call) (*tools.Result, bool, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			res, ok := b.effects[call.ID]
			return res, ok, nil
		},
	}
}

func (b *book) count() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.effects) }

// holdRuns makes the book's next runs wait, and returns their release.
func (b *book) holdRuns(t *testing.T) func() {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hold = ch
	b.mu.Unlock()
	var once sync.Once
	release := func() {
		once.Do(func() {
			b.mu.Lock()
			b.hold = nil
			b.mu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(release)
	return release
}

// process is one life of a server: an approval service and a guard over
// a database, a log and backends that outlive it.
type process struct {
	svc *approval.Service
	g   *Guard
}

type world struct {
	t      *testing.T
	db     *store.DB
	log    *memLog
	cat    *tools.Catalog
	book   *book
	once   *counter // a backend that cannot tell whether a call took effect
	policy *fixedPolicy
	alice  *approvaltest.SoftKey
	tune   func(*Options) // changes each life's guard options, if set
}

func newWorld(t *testing.T) *world {
	t.Helper()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	return newWorldOn(t, db)
}

// newWorldOn is a world on db, of either dialect. On PostgreSQL each life
// holds its own owner in the replicas table, as a replica does.
func newWorldOn(t *testing.T, db *store.DB) *world {
	t.Helper()
	w := &world{t: t, db: db, log: &memLog{}, cat: tools.NewCatalog(), book: &book{}, once: &counter{},
		policy: &fixedPolicy{d: authz.Decision{Level: vocab.LevelHigh, Reason: "test", Quorum: 1, Approvers: []string{"alice"}, Wait: authz.WaitPoll}}}
	if err := w.cat.Replace("test", []*tools.Spec{w.book.spec("note"), w.once.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	return w
}

// start begins a life. The previous one must have ended (died or closed).
func (w *world) start() *process {
	w.t.Helper()
	ctx := context.Background()
	owners, err := store.OwnersFor(ctx, w.db, store.OwnerOptions{})
	if err != nil {
		w.t.Fatal(err)
	}
	svc, err := approval.New(ctx, w.db, w.log, approval.Options{
		RPID: "localhost", Origins: []string{origin}, Approvers: []approval.Approver{{ID: "alice"}},
		Owners: owners,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { svc.Close() })
	opts := Options{Catalog: w.cat, Policy: w.policy, Audit: w.log, History: w.log, Marks: store.Marks{DB: w.db},
		Requests: svc, Runs: svc, Recovery: svc, Tasks: svc, Tools: map[string]config.Tool{}, ToolWait: time.Second}
	if w.tune != nil {
		w.tune(&opts)
	}
	g := New(opts)
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
	key := approvaltest.NewSoftKey(t, "localhost", origin)
	link, err := svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	token := link[strings.LastIndex(link, "/")+1:]
	opts, err := svc.BeginEnrollment(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.FinishEnrollment(ctx, token, opts.Ceremony, key.Create(t, opts.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return key
}

func (w *world) approve(p *process, id string) {
	w.t.Helper()
	ctx := context.Background()
	opts, err := p.svc.BeginDecision(ctx, id, vocab.Approve)
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
	return w.raiseFor(p, "bot", tool, args)
}

func (w *world) raiseFor(p *process, agent, tool string, args map[string]any) string {
	w.t.Helper()
	res := p.g.Handle(context.Background(), Call{Tool: tool, Agent: agent, Args: args})
	var out struct {
		Status string `json:"status"`
		ID     string `json:"auth_req_id"`
	}
	if err := json.Unmarshal([]byte(text(res)), &out); err != nil || out.Status != "authorization_pending" {
		w.t.Fatalf("poll-mode call: %s (%v)", text(res), err)
	}
	return out.ID
}

func (w *world) waitState(p *process, id string, state vocab.State) *approval.Request {
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

// waitKinds waits for the request's log to read want. A request's state
// can be final before its entry leaves the approval outbox for the log.
func (w *world) waitKinds(id string, want ...vocab.Kind) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := w.kinds(id)
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || time.Now().After(deadline) {
			w.t.Fatalf("log of %s: %v, want %v", id, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *world) kinds(id string) []vocab.Kind {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	var out []vocab.Kind
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
	block, err := p1.svc.Create(ctx, approval.NewRequest{Tool: "note", Agent: "bot", Args: digest.MustParseArgs(`{"note":"x"}`),
		Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := p2.svc.Get(ctx, block.ID); r.State != vocab.StateCancelled || r.Reason != approval.ReasonRestarted {
		t.Fatalf("block-mode request after restart: %s %q", r.State, r.Reason)
	}
	if w.book.count() != 0 {
		t.Fatal("ran before approval")
	}
	w.approve(p2, poll)
	r := w.waitState(p2, poll, vocab.StateExecuted)
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
	var res map[string]any
	if err := json.Unmarshal(r.Result, &res); err != nil || res["note"] != "keep me" || res["call_id"] != "request:"+poll {
		t.Fatalf("result %s (%v)", r.Result, err)
	}
	w.waitKinds(poll, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
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
		r, err := p1.svc.Create(ctx, approval.NewRequest{Tool: tool, Agent: "bot", Args: digest.MustParseArgs(args),
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
	if _, err := w.book.spec("note").Run(ctx, &tools.Call{ID: "request:" + doneID, Args: map[string]any{"note": "paid"}}); err != nil {
		t.Fatal(err)
	}
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	r := w.waitState(p2, doneID, vocab.StateExecuted)
	if !strings.Contains(string(r.Result), `"note":"paid"`) {
		t.Fatalf("recovered result %s", r.Result)
	}
	w.waitState(p2, neverID, vocab.StateExecuted)
	if w.book.count() != 2 {
		t.Fatalf("book has %d effects, want the recovered one and the one run now", w.book.count())
	}
	for _, id := range []string{doneID, neverID} {
		w.waitKinds(id, vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved, vocab.KindCallExecuted)
	}
	r = w.waitState(p2, unknownID, vocab.StateInterrupted)
	if w.once.count() != 0 {
		t.Fatal("a backend that cannot tell ran after the restart")
	}
	if !strings.Contains(r.Reason, "not run again") {
		t.Fatalf("interrupted reason %q", r.Reason)
	}
	if kinds := w.kinds(unknownID); kinds[len(kinds)-1] != vocab.KindCallInterrupted {
		t.Fatalf("log of the interrupted request %v", kinds)
	}
	ps, err := p2.svc.Poll(ctx, unknownID, "bot")
	if err != nil || ps.Status != approval.PollInterrupted {
		t.Fatalf("poll %+v %v", ps, err)
	}
}

// Routine calls a kill left without an outcome get one at the next start:
// the backend that can tell says whether each took effect, any other gets
// call.interrupted (a read too); calls that have their outcome get nothing
// more.
func TestRestartSettlesRoutineCallsLeftOpen(t *testing.T) {
	w := newWorld(t)
	w.policy.d = authz.Decision{Level: vocab.LevelLow}
	ctx := context.Background()
	ro := &counter{}
	roSpec := ro.spec("peek")
	roSpec.Def.Annotations.ReadOnlyHint = mcp.ToBoolPtr(true)
	if err := w.cat.Replace("test", []*tools.Spec{w.book.spec("note"), w.once.spec("pay"), roSpec}); err != nil {
		t.Fatal(err)
	}
	p1 := w.start()
	if err := p1.g.Resume(ctx); err != nil { // sets the mark on a new database
		t.Fatal(err)
	}
	call := func(tool string, args map[string]any) {
		if res := p1.g.Handle(ctx, Call{Tool: tool, Agent: "bot", Args: args}); res.IsError {
			t.Fatal(text(res))
		}
	}
	call("note", map[string]any{"note": "one"})
	call("pay", map[string]any{"amount": 1.0})
	// Took effect; the record was lost.
	w.log.mu.Lock()
	w.log.failKind = vocab.KindCallExecuted
	w.log.mu.Unlock()
	// It stays lost until the kill: a live process would record it
	// itself (TestAnOutcomeTheLogCouldNotTakeIsRecordedOnceItCan).
	p1.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "lost"}})
	p1.g.advanceMark(ctx) // a lost record keeps the mark where it is
	// Killed while running: before the effect (note), or with the outcome
	// unknowable (pay), or reading (peek).
	w.book.holdRuns(t)
	blocked := make(chan struct{})
	w.once.result = func(context.Context) (*tools.Result, error) { <-blocked; return nil, errors.New("released") }
	ro.result = w.once.result
	t.Cleanup(func() { close(blocked) })
	go p1.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "never"}})
	go p1.g.Handle(ctx, Call{Tool: "pay", Agent: "bot", Args: map[string]any{"amount": 2.0}})
	go p1.g.Handle(ctx, Call{Tool: "peek", Agent: "bot", Args: map[string]any{"amount": 3.0}})
	deadline := time.Now().Add(10 * time.Second)
	for len(w.log.kinds()) < 3+2+2+3 {
		if time.Now().After(deadline) {
			t.Fatalf("log %v", w.log.kinds())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p1.die() // the held calls stay held: in a killed process they never return
	w.log.mu.Lock()
	w.log.failKind = ""
	w.log.mu.Unlock()

	p2 := w.start()
	before := len(w.log.kinds())
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	w.log.mu.Lock()
	added := slices.Clone(w.log.entries[before:])
	w.log.mu.Unlock()
	got := map[string]string{}
	for _, e := range added {
		got[string(e.Args)] = string(e.Kind) + ": " + e.Reason
	}
	want := map[string]string{
		`{"note":"lost"}`:                   string(vocab.KindCallExecuted) + ": recorded at start",
		`{"note":"never"}`:                  string(vocab.KindCallFailed) + ": recorded at start: the server stopped before this took effect",
		`{"amount":2,"to":"default payee"}`: string(vocab.KindCallInterrupted) + ": the server stopped while this ran",
		`{"amount":3,"to":"default payee"}`: string(vocab.KindCallInterrupted) + ": the server stopped while this ran",
	}
	if len(got) != len(want) {
		t.Fatalf("recorded at start: %v, want %v", got, want)
	}
	for args, prefix := range want {
		if !strings.HasPrefix(got[args], prefix) {
			t.Errorf("call %s: recorded %q, want %q…", args, got[args], prefix)
		}
	}
	for _, e := range added {
		if e.Agent != "bot" || !strings.Contains(e.Reason, "(allowed at seq ") {
			t.Errorf("entry %+v does not repeat its call.allowed", e)
		}
	}
	// A second start finds nothing more to settle.
	p2.die()
	p3 := w.start()
	n := len(w.log.kinds())
	if err := p3.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if more := len(w.log.kinds()) - n; more != 0 {
		t.Fatalf("a second start recorded %d more entries", more)
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
	if r, _ := p.svc.Get(ctx, poll); r.State != vocab.StatePending {
		t.Fatalf("poll-mode request after shutdown: %s", r.State)
	}
	res = p.g.Handle(ctx, Call{Tool: "note", Agent: "bot", Args: map[string]any{"note": "late"}})
	if !res.IsError || !strings.Contains(text(res), "shutting down") {
		t.Fatalf("call during shutdown: %q", text(res))
	}
	if e := w.log.last(vocab.KindCallRejected); e.Reason != "server shutting down" {
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
	r := w.waitState(p2, id, vocab.StateFailed)
	if !strings.Contains(string(r.Result), "tool note is not available") {
		t.Fatalf("result %s", r.Result)
	}
	// The state is final before the entry leaves the approval outbox for
	// the log (see waitKinds).
	deadline := time.Now().Add(10 * time.Second)
	for e := w.log.last(vocab.KindCallFailed); e.RequestID != id; e = w.log.last(vocab.KindCallFailed) {
		if time.Now().After(deadline) {
			t.Fatalf("failure not recorded: %+v", e)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A resumed request whose tool comes back while it waits (an upstream
// reconnecting after the restart) runs once it is there.
func TestResumedRequestWaitsForItsTool(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	p1 := w.start()
	id := w.raise(p1, "note", map[string]any{"note": "later"})
	p1.die()
	if err := w.cat.Replace("test", []*tools.Spec{w.once.spec("pay")}); err != nil {
		t.Fatal(err)
	}
	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	w.approve(p2, id)
	time.Sleep(300 * time.Millisecond)
	if r, _ := p2.svc.Get(ctx, id); r.State != vocab.StateApproved {
		t.Fatalf("while its tool is missing the request is %s", r.State)
	}
	if err := w.cat.Replace("test", []*tools.Spec{w.once.spec("pay"), w.book.spec("note")}); err != nil {
		t.Fatal(err)
	}
	w.waitState(p2, id, vocab.StateExecuted)
	if w.book.count() != 1 {
		t.Fatalf("ran %d times", w.book.count())
	}
}

// A CIBA backchannel request has no tool to run: a restart leaves it to
// its client, pending or approved, and fails a redemption it cut short
// (no token was handed out: the token's record commits with the request's
// end).
func TestRestartLeavesBackchannelRequestsToTheirClients(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	p1 := w.start()
	raise := func() string {
		r, err := p1.svc.Create(ctx, approval.NewRequest{Tool: "ciba", Agent: "client", Args: digest.MustParseArgs(`{"scope":"x"}`),
			Level: "high", Approvers: []string{"alice"}, Wait: approval.WaitBackchannel})
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	pending, approved, claimed := raise(), raise(), raise()
	w.approve(p1, approved)
	w.approve(p1, claimed)
	if err := p1.svc.BeginExecution(ctx, claimed); err != nil {
		t.Fatal(err)
	}
	p1.die()

	p2 := w.start()
	if err := p2.g.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // longer than ToolWait: nothing may fail them meanwhile
	for id, want := range map[string]vocab.State{pending: vocab.StatePending, approved: vocab.StateApproved} {
		if r, _ := p2.svc.Get(ctx, id); r.State != want {
			t.Errorf("backchannel request %s after restart: %s (%s), want %s", id, r.State, r.Reason, want)
		}
	}
	r, _ := p2.svc.Get(ctx, claimed)
	if r.State != vocab.StateFailed || !strings.Contains(string(r.Result), "before the approval token was issued") {
		t.Errorf("a redemption cut short: %s %s", r.State, r.Result)
	}
}
