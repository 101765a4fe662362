package approval

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol/webauthncose"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

func TestApproveWaitExecuteOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)

		req, err := f.svc.Create(ctx, paymentRequest("alice", "bob"))
		if err != nil {
			t.Fatal(err)
		}
		if req.State != vocab.StatePending || len(req.Code) != 6 || !strings.Contains(req.BindingMessage, req.Code) {
			t.Fatalf("created %+v", req)
		}
		if !strings.HasSuffix(req.URL, "/requests/"+req.ID) || req.ExpiresAt.Nanosecond() != 0 {
			t.Fatalf("url %q expires %v", req.URL, req.ExpiresAt)
		}
		if got := f.rec.Kinds(req.ID); !slices.Equal(got, []vocab.Kind{vocab.KindApprovalRequested}) {
			t.Fatalf("kinds after create %v", got)
		}

		waited := make(chan *Request, 1)
		go func() {
			r, err := f.svc.Wait(ctx, req.ID)
			if err != nil {
				t.Error(err)
			}
			waited <- r
		}()
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		got := <-waited
		if got.State != vocab.StateApproved || got.DecidedBy != "alice" || !slices.Equal(got.Approvals, []string{"alice"}) {
			t.Fatalf("wait returned %+v", got)
		}
		if want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved}; !slices.Equal(f.rec.Kinds(req.ID), want) {
			t.Fatalf("kinds %v, want %v", f.rec.Kinds(req.ID), want)
		}

		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("second BeginExecution: %v", err)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateExecuted, Result: []byte(`{"ok":true}`)}); err != nil {
			t.Fatal(err)
		}
		final, _ := f.svc.Get(ctx, req.ID)
		if final.State != vocab.StateExecuted || string(final.Result) != `{"ok":true}` {
			t.Fatalf("final %+v", final)
		}
		if err := f.svc.Finish(ctx, req.ID, Outcome{State: vocab.StateFailed}); !errors.Is(err, ErrNotExecuting) {
			t.Fatalf("second Finish: %v", err)
		}
	})
}

// The assertion entry alone (plus the enrolled COSE key) must let an
// auditor recompute the digest and check the signature.
func TestAssertionEntryVerifiesOffline(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		nr := paymentRequest("alice")
		nr.RedactArgs = true
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
			t.Fatal(err)
		}
		enrolled, _ := f.rec.Last(vocab.KindApproverEnrolled)
		e, _ := f.rec.Last(vocab.KindApprovalAssertion)
		if len(e.Args) != 0 || !e.ArgsRedact {
			t.Fatalf("redacted request leaked args: %s", e.Args)
		}
		if e.CredentialID != enrolled.CredentialID || e.Origin != testOrigin || e.RPID != "localhost" || e.Decision != "approve" {
			t.Fatalf("entry %+v", e)
		}
		d := func(s string) []byte {
			b, err := base64.RawURLEncoding.DecodeString(s)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		argsSum, _ := hex.DecodeString(e.ArgsSHA256)
		exp, _ := time.Parse(time.RFC3339, e.ExpiresAt)
		want, err := digest.Compute(digest.Action{
			RequestID: e.RequestID, Decision: vocab.Decision(e.Decision), AuthorizationDetails: e.AuthorizationDetails,
			Tool: e.Tool, ArgsSHA256: [32]byte(argsSum), Display: e.Display, Nonce: d(e.Nonce), ExpiresAt: exp,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(d(e.ClientDataJSON)), `"challenge":"`+enc(want[:])+`"`) {
			t.Fatalf("clientDataJSON %s does not carry the recomputed digest", d(e.ClientDataJSON))
		}
		key, err := webauthncose.ParsePublicKey(d(enrolled.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		cdh := sha256.Sum256(d(e.ClientDataJSON))
		ok, err := webauthncose.VerifySignature(key, append(d(e.AuthenticatorData), cdh[:]...), d(e.Signature))
		if err != nil || !ok {
			t.Fatalf("offline signature check: %v %v", ok, err)
		}
	})
}

func TestDenyEndsRequest(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		req, _ := f.svc.Create(ctx, paymentRequest("alice", "bob"))
		got, err := f.decide(t, req.ID, vocab.Deny, bob)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != vocab.StateDenied || got.DecidedBy != "bob" {
			t.Fatalf("after deny %+v", got)
		}
		if e, _ := f.rec.Last(vocab.KindApprovalDenied); e.Decision != "deny" || e.Signature == "" || e.Approver != "bob" {
			t.Fatalf("denied entry %+v", e)
		}
		w, err := f.svc.Wait(ctx, req.ID)
		if err != nil || w.State != vocab.StateDenied {
			t.Fatalf("wait after deny: %v %v", w, err)
		}
		if _, err := f.svc.BeginDecision(ctx, req.ID, vocab.Approve); !errors.Is(err, ErrNotPending) {
			t.Fatalf("begin on denied request: %v", err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("BeginExecution on denied: %v", err)
		}
	})
}

// Expiry fires with nobody waiting and no page open.
func TestExpiryWithoutWaiter(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		nr := paymentRequest("alice")
		nr.Timeout = 1500 * time.Millisecond
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		ceremony, resp := f.sign(t, req.ID, vocab.Approve, alice)
		// On PostgreSQL the waiters hear the expiry from its commit
		// (watch.Announce), a moment before it is logged.
		for {
			changed := f.svc.watch.Any()
			r, _ := f.svc.Get(ctx, req.ID)
			if r.State == vocab.StateExpired && slices.Contains(f.rec.Kinds(req.ID), vocab.KindApprovalExpired) {
				break
			}
			<-changed
		}
		// An assertion made before expiry does not count after it.
		if _, err := f.svc.FinishDecision(ctx, req.ID, ceremony, resp); err == nil {
			t.Fatal("approved after expiry")
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("BeginExecution after expiry: %v", err)
		}
		st, err := f.svc.Poll(ctx, req.ID, "agent-1")
		if err != nil || st.Status != PollExpired {
			t.Fatalf("poll %v %v", st, err)
		}
	})
}

func TestCriticalNeedsQuorumWithUV(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		nr := paymentRequest("alice", "bob")
		nr.Level = "critical"
		nr.UserVerification = "preferred" // critical overrides it to required
		req, err := f.svc.Create(ctx, nr)
		if err != nil {
			t.Fatal(err)
		}
		if req.Quorum != 2 {
			t.Fatalf("quorum %d", req.Quorum)
		}
		opts, err := f.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		if err != nil {
			t.Fatal(err)
		}
		if opts.PublicKey.UserVerification != "required" {
			t.Fatalf("critical user verification %q", opts.PublicKey.UserVerification)
		}
		// Bob's key without UV is refused.
		bob.UV = false
		if _, err := f.decide(t, req.ID, vocab.Approve, bob); !errors.Is(err, ceremony.ErrUserVerification) {
			t.Fatalf("no-UV assertion: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrUserVerification.Check)
		bob.UV = true

		got, err := f.decide(t, req.ID, vocab.Approve, alice)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != vocab.StatePending || !slices.Equal(got.Approvals, []string{"alice"}) {
			t.Fatalf("after one of two: %+v", got)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("BeginExecution with 1 of 2: %v", err)
		}
		c, resp := f.sign(t, req.ID, vocab.Approve, bob)
		opts2, _ := f.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		for _, cr := range opts2.PublicKey.AllowedCredentials {
			if string(cr.CredentialID) == string(alice.ID()) {
				t.Fatal("an already-counted approver's key is offered again")
			}
		}
		got, err = f.svc.FinishDecision(ctx, req.ID, c, resp)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != vocab.StateApproved || got.DecidedBy != "alice,bob" {
			t.Fatalf("after two of two: %+v", got)
		}
		for _, e := range f.rec.Entries() {
			if e.Kind == vocab.KindApprovalAssertion && !e.UserVerified {
				t.Fatalf("critical assertion entry without UV: %+v", e)
			}
		}
	})
}

func TestPollCIBA(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		var nowNS atomic.Int64
		nowNS.Store(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).UnixNano())
		advance := func(d time.Duration) { nowNS.Add(int64(d)) }
		clock := func() time.Time { return time.Unix(0, nowNS.Load()) }
		f := fixtureOn(t, t.TempDir(), db, func(o *Options) { o.Now = clock; o.PollInterval = 5 * time.Second })
		ctx := context.Background()
		req, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		if req.Interval != 5*time.Second {
			t.Fatalf("interval %v", req.Interval)
		}
		if _, err := f.svc.Poll(ctx, req.ID, "someone-else"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("foreign agent poll: %v", err)
		}
		st, err := f.svc.Poll(ctx, req.ID, "agent-1")
		if err != nil || st.Status != PollPending {
			t.Fatalf("first poll %v %v", st, err)
		}
		advance(time.Second)
		if st, _ := f.svc.Poll(ctx, req.ID, "agent-1"); st.Status != PollSlowDown || st.Request.Interval != 10*time.Second {
			t.Fatalf("fast poll %v, interval %v; want slow_down and 5s more", st.Status, st.Request.Interval)
		}
		// The grown interval is the one to keep: 6s is now too fast.
		advance(6 * time.Second)
		if st, _ := f.svc.Poll(ctx, req.ID, "agent-1"); st.Status != PollSlowDown || st.Request.Interval != 15*time.Second {
			t.Fatalf("poll 6s later %v, interval %v; want slow_down and 5s more", st.Status, st.Request.Interval)
		}
		advance(15 * time.Second)
		if st, _ := f.svc.Poll(ctx, req.ID, "agent-1"); st.Status != PollPending || st.Request.Interval != 15*time.Second {
			t.Fatalf("slow poll %v, interval %v", st.Status, st.Request.Interval)
		}
		if err := f.svc.Cancel(ctx, req.ID, "agent gave up"); err != nil {
			t.Fatal(err)
		}
		if st, _ := f.svc.Poll(ctx, req.ID, "agent-1"); st.Status != PollDenied {
			t.Fatalf("after cancel %v", st.Status)
		}
		if err := f.svc.Cancel(ctx, req.ID, "again"); !errors.Is(err, ErrNotPending) {
			t.Fatalf("second cancel %v", err)
		}
	})
}

func TestWaitCancelledWhenCallerGoes(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		req, err := f.svc.Create(context.Background(), paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan *Request)
		go func() {
			r, _ := f.svc.Wait(ctx, req.ID)
			done <- r
		}()
		cancel()
		r := <-done
		if r.State != vocab.StateCancelled {
			t.Fatalf("state %s", r.State)
		}
		if !slices.Contains(f.rec.Kinds(req.ID), vocab.KindApprovalCancelled) {
			t.Fatalf("kinds %v", f.rec.Kinds(req.ID))
		}
	})
}

// If the audit log cannot be appended to, the approval must not count.
func TestAuditFailureFailsClosed(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)

		f.rec.SetFail(true)
		if _, err := f.svc.Create(ctx, paymentRequest("alice")); !errors.Is(err, ErrRecord) {
			t.Fatalf("create with broken log: %v", err)
		}
		f.rec.SetFail(false)

		req, err := f.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		f.rec.SetFail(true)
		if _, err := f.decide(t, req.ID, vocab.Approve, alice); !errors.Is(err, ErrRecord) {
			t.Fatalf("approve with broken log: %v", err)
		}
		if r, _ := f.svc.Get(ctx, req.ID); r.State != vocab.StatePending {
			t.Fatalf("unlogged approval visible as %s", r.State)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("BeginExecution of unlogged approval: %v", err)
		}
		// Once the log works again the outbox is appended and it counts.
		f.rec.SetFail(false)
		if err := f.svc.flush(ctx, false); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); err != nil {
			t.Fatalf("after log recovered: %v", err)
		}
		if want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalApproved}; !slices.Equal(f.rec.Kinds(req.ID), want) {
			t.Fatalf("kinds %v", f.rec.Kinds(req.ID))
		}
	})
}

func TestCreateValidates(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		for name, mut := range map[string]func(*NewRequest){
			"no tool":          func(r *NewRequest) { r.Tool = "" },
			"bad level":        func(r *NewRequest) { r.Level = "low" },
			"unknown approver": func(r *NewRequest) { r.Approvers = []string{"mallory"} },
			"no approvers":     func(r *NewRequest) { r.Approvers = nil },
			"quorum too big":   func(r *NewRequest) { r.Quorum = 3 },
			"details object":   func(r *NewRequest) { r.AuthorizationDetails = []byte(`{"type":"x"}`) },
		} {
			nr := paymentRequest("alice", "bob")
			mut(&nr)
			if _, err := f.svc.Create(ctx, nr); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

func splitDetails(t *testing.T, s string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The pending caps are counted in the transaction that stores a request:
// many Creates at once, from two processes (replicas) on one store,
// leave exactly the cap pending, and every other is refused with a
// *CapError naming the cap, on both dialects.
func TestPendingCapsHoldUnderConcurrentCreates(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, da, db *store.DB) {
		dir := t.TempDir()
		a, b := fixtureOn(t, dir, da), fixtureOn(t, dir, db)
		const perAgent, total, calls = 3, 5, 12
		create := func(f *fixture, agent string) error {
			r := paymentRequest("alice")
			r.Agent, r.Wait = agent, WaitPoll
			r.Caps = PendingCaps{PerAgent: perAgent, Total: total}
			_, err := f.svc.Create(context.Background(), r)
			return err
		}
		race := func(agent string) (made int, refused []*CapError) {
			errs := make(chan error, calls)
			release := holdRequests(t, da, calls)
			for i := range calls {
				go func() { errs <- create([]*fixture{a, b}[i%2], agent) }()
			}
			release()
			for range calls {
				var ce *CapError
				switch err := <-errs; {
				case err == nil:
					made++
				case errors.As(err, &ce):
					refused = append(refused, ce)
				default:
					t.Fatalf("Create: %v", err)
				}
			}
			return made, refused
		}
		made, refused := race("bot-1")
		if n, _ := a.svc.PendingFor(context.Background(), "bot-1"); made != perAgent || n != perAgent {
			t.Fatalf("%d created, %d pending of a cap of %d", made, n, perAgent)
		}
		for _, ce := range refused {
			if ce.Agent != "bot-1" || ce.Max != perAgent || ce.Pending != perAgent {
				t.Errorf("refused by %+v, want bot-1's cap of %d, full", ce, perAgent)
			}
		}
		made, refused = race("bot-2")
		var all int // counted from the rows, not the counter the caps read
		if err := db.QueryRow(`SELECT COUNT(*) FROM approval_requests WHERE state = 'pending'`).Scan(&all); err != nil || made != total-perAgent || all != total {
			t.Fatalf("second agent: %d created, %d pending in all, cap %d", made, all, total)
		}
		for _, ce := range refused {
			if ce.Agent != "" || ce.Max != total || ce.Pending != total {
				t.Errorf("refused by %+v, want the total cap of %d, full", ce, total)
			}
		}
	})
}

// holdRequests blocks writes to approval_requests until the release it
// returns is called, so that the Creates started meanwhile all get as
// far as they can before any commits: on PostgreSQL release waits until
// waiting of them are blocked; SQLite shows no waiters, so it pauses a
// moment (the test holds without it, only less sharply).
func holdRequests(t *testing.T, db *store.DB, waiting int) (release func()) {
	t.Helper()
	ctx := context.Background()
	if db.Dialect() == store.SQLite {
		held, done := make(chan struct{}), make(chan struct{})
		go db.InTx(ctx, func(*sql.Tx) error { close(held); <-done; return nil })
		<-held
		return func() { time.Sleep(200 * time.Millisecond); close(done) }
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `LOCK TABLE approval_requests IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	return func() {
		defer tx.Commit()
		deadline := time.Now().Add(30 * time.Second)
		for n := 0; n < waiting && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'approval_requests'::regclass`).Scan(&n); err != nil {
				t.Error(err)
				return
			}
		}
	}
}
