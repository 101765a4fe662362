package approval

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// Every attack must fail closed and leave an approval.rejected entry that
// names the check.

func TestReplayIsRejected(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		nr := paymentRequest("alice", "bob")
		nr.Level = "critical"
		req, _ := f.svc.Create(ctx, nr)
		cer, captured := f.sign(t, req.ID, vocab.Approve, alice)
		if _, err := f.svc.FinishDecision(ctx, req.ID, cer, captured); err != nil {
			t.Fatal(err)
		}

		// Same ceremony again.
		if _, err := f.svc.FinishDecision(ctx, req.ID, cer, captured); !errors.Is(err, ceremony.ErrCeremony) {
			t.Fatalf("replay on used ceremony: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrCeremony.Check)

		// A fresh ceremony on the same request: the digest is the same, so
		// the replay check must catch it.
		opts, err := f.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.FinishDecision(ctx, req.ID, opts.Ceremony, captured); !errors.Is(err, ceremony.ErrReplay) {
			t.Fatalf("replay on same request: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrReplay.Check)

		// Another request: the digest differs.
		other, _ := f.svc.Create(ctx, nr)
		opts, _ = f.svc.BeginDecision(ctx, other.ID, vocab.Approve)
		if _, err := f.svc.FinishDecision(ctx, other.ID, opts.Ceremony, captured); !errors.Is(err, ceremony.ErrChallenge) {
			t.Fatalf("replay on another request: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrChallenge.Check)

		for _, id := range []string{req.ID, other.ID} {
			if r, _ := f.svc.Get(ctx, id); r.State != vocab.StatePending || (id == other.ID && len(r.Approvals) != 0) {
				t.Fatalf("%s after replays: %+v", id, r)
			}
		}
	})
}

func TestDecisionCannotBeSwapped(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		req, _ := f.svc.Create(ctx, paymentRequest("alice"))

		approveOpts, _ := f.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		denyOpts, _ := f.svc.BeginDecision(ctx, req.ID, vocab.Deny)
		signedApprove := alice.Get(approveOpts.PublicKey.Challenge.String())
		signedDeny := alice.Get(denyOpts.PublicKey.Challenge.String())

		if _, err := f.svc.FinishDecision(ctx, req.ID, denyOpts.Ceremony, signedApprove); !errors.Is(err, ceremony.ErrChallenge) {
			t.Fatalf("approve assertion as deny: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrChallenge.Check)
		if _, err := f.svc.FinishDecision(ctx, req.ID, approveOpts.Ceremony, signedDeny); !errors.Is(err, ceremony.ErrChallenge) {
			t.Fatalf("deny assertion as approve: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrChallenge.Check)
		if r, _ := f.svc.Get(ctx, req.ID); r.State != vocab.StatePending {
			t.Fatalf("state %s", r.State)
		}
	})
}

func TestAssertionChecks(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob, carol := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		f.enroll(t, "carol", carol)

		try := func(t *testing.T, key *approvaltest.SoftKey, approvers []string, want *ceremony.CheckError) {
			t.Helper()
			req, err := f.svc.Create(ctx, paymentRequest(approvers...))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.decide(t, req.ID, vocab.Approve, key); !errors.Is(err, want) {
				t.Fatalf("got %v, want %s", err, want.Check)
			}
			f.rec.RequireRejected(t, want.Check)
			if r, _ := f.svc.Get(ctx, req.ID); r.State != vocab.StatePending || len(r.Approvals) != 0 {
				t.Fatalf("after refused assertion: %+v", r)
			}
			if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
				t.Fatalf("BeginExecution: %v", err)
			}
		}

		t.Run("wrong origin", func(t *testing.T) {
			alice.Origin = "http://evil.example:8710"
			defer func() { alice.Origin = testOrigin }()
			try(t, alice, []string{"alice"}, ceremony.ErrOrigin)
		})
		t.Run("wrong rp id", func(t *testing.T) {
			alice.RPID = "evil.example"
			defer func() { alice.RPID = "localhost" }()
			try(t, alice, []string{"alice"}, ceremony.ErrRPID)
		})
		t.Run("unknown credential", func(t *testing.T) {
			try(t, approvaltest.NewSoftKey(t, "localhost", testOrigin), []string{"alice"}, ceremony.ErrUnknownCredential)
		})
		t.Run("approver not allowed", func(t *testing.T) {
			try(t, carol, []string{"alice", "bob"}, ceremony.ErrApproverNotAllowed)
		})
		t.Run("bad signature", func(t *testing.T) {
			forger := approvaltest.NewSoftKey(t, "localhost", testOrigin)
			forger.Claim(bob.ID(), 100) // claims bob's credential, signs with another key
			try(t, forger, []string{"bob"}, ceremony.ErrSignature)
		})
		t.Run("counter regression", func(t *testing.T) {
			req, _ := f.svc.Create(ctx, paymentRequest("alice"))
			if _, err := f.decide(t, req.ID, vocab.Approve, alice); err != nil {
				t.Fatal(err)
			}
			alice.Counter -= 2 // a clone that is behind
			try(t, alice, []string{"alice"}, ceremony.ErrCounter)
			alice.Counter += 10
		})
		t.Run("revoked credential", func(t *testing.T) {
			if err := f.svc.RevokeCredential(ctx, enc(carol.ID()), "lost"); err != nil {
				t.Fatal(err)
			}
			if e, _ := f.rec.Last(vocab.KindCredentialRevoked); e.CredentialID != enc(carol.ID()) || e.Reason != "lost" {
				t.Fatalf("revoked entry %+v", e)
			}
			try(t, carol, []string{"alice", "carol"}, ceremony.ErrRevokedCredential)
		})
	})
}

func TestSameApproverTwiceIsOneVote(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		key1, key2 := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", key1)

		// Alice's second key: the link needs one of her keys to vouch first.
		link, _ := f.svc.CreateEnrollment(ctx, "alice")
		token := link[strings.LastIndex(link, "/")+1:]
		step, err := f.svc.BeginEnrollment(ctx, token)
		if err != nil || step.Step != "get" {
			t.Fatalf("second key first step %+v %v", step, err)
		}
		// A create ceremony cannot be slipped in before the vouching one.
		var opts struct {
			Challenge string `json:"challenge"`
		}
		if err := json.Unmarshal(step.PublicKey, &opts); err != nil {
			t.Fatal(err)
		}
		key2.UserHandle = key1.UserHandle
		if _, err := f.svc.FinishEnrollment(ctx, token, step.Ceremony, key2.Get(opts.Challenge)); !errors.Is(err, ceremony.ErrUnknownCredential) {
			t.Fatalf("new key vouching for itself: %v", err)
		}
		step, _ = f.svc.BeginEnrollment(ctx, token)
		json.Unmarshal(step.PublicKey, &opts)
		if res, err := f.svc.FinishEnrollment(ctx, token, step.Ceremony, key1.Get(opts.Challenge)); err != nil || res.Done {
			t.Fatalf("vouching: %+v %v", res, err)
		}
		step, _ = f.svc.BeginEnrollment(ctx, token)
		if step.Step != "create" {
			t.Fatalf("after vouching step %q", step.Step)
		}
		if _, err := f.svc.FinishEnrollment(ctx, token, step.Ceremony, key2.Create(t, step.PublicKey)); err != nil {
			t.Fatal(err)
		}
		if e, _ := f.rec.Last(vocab.KindApproverEnrolled); e.CredentialID != enc(key2.ID()) || !strings.Contains(e.Reason, "vouched for by key "+enc(key1.ID())) {
			t.Fatalf("enrolled entry %+v", e)
		}
		if _, err := f.svc.BeginEnrollment(ctx, token); !errors.Is(err, ceremony.ErrEnrollment) {
			t.Fatalf("link reused: %v", err)
		}

		bob := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "bob", bob)
		nr := paymentRequest("alice", "bob")
		nr.Level = "critical"
		req, _ := f.svc.Create(ctx, nr)
		if _, err := f.decide(t, req.ID, vocab.Approve, key1); err != nil {
			t.Fatal(err)
		}
		// Alice's other key is no longer offered; a page that uses it anyway
		// is refused, and alice still counts once.
		opts2, err := f.svc.BeginDecision(ctx, req.ID, vocab.Approve)
		if err != nil {
			t.Fatal(err)
		}
		if len(opts2.PublicKey.AllowedCredentials) != 1 || string(opts2.PublicKey.AllowedCredentials[0].CredentialID) != string(bob.ID()) {
			t.Fatalf("offered %+v, want only bob's key", opts2.PublicKey.AllowedCredentials)
		}
		if _, err := f.svc.FinishDecision(ctx, req.ID, opts2.Ceremony, key2.Get(opts2.PublicKey.Challenge.String())); !errors.Is(err, ErrAlreadyCounted) {
			t.Fatalf("alice twice: %v", err)
		}
		f.rec.RequireRejected(t, ErrAlreadyCounted.Check)
		if r, _ := f.svc.Get(ctx, req.ID); r.State != vocab.StatePending || len(r.Approvals) != 1 {
			t.Fatalf("after alice twice: %+v", r)
		}
		if _, err := f.decide(t, req.ID, vocab.Approve, bob); err != nil {
			t.Fatal(err)
		}
		if r, _ := f.svc.Get(ctx, req.ID); r.State != vocab.StateApproved {
			t.Fatalf("alice and bob: %s", r.State)
		}
	})
}

func TestApproveAfterExpiry(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		var nowNS atomic.Int64
		nowNS.Store(time.Now().UnixNano())
		f := fixtureOn(t, t.TempDir(), db, func(o *Options) { o.Now = func() time.Time { return time.Unix(0, nowNS.Load()) } })
		ctx := context.Background()
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		req, _ := f.svc.Create(ctx, paymentRequest("alice"))
		ceremony, resp := f.sign(t, req.ID, vocab.Approve, alice)
		nowNS.Add(int64(2 * time.Minute))
		if _, err := f.svc.FinishDecision(ctx, req.ID, ceremony, resp); !errors.Is(err, ErrExpired) {
			t.Fatalf("approve after expiry: %v", err)
		}
		f.rec.RequireRejected(t, ErrExpired.Check)
		r, _ := f.svc.Get(ctx, req.ID)
		if r.State != vocab.StateExpired {
			t.Fatalf("state %s", r.State)
		}
		if err := f.svc.BeginExecution(ctx, req.ID); !errors.Is(err, ErrNotApproved) {
			t.Fatalf("BeginExecution: %v", err)
		}
	})
}

func TestConcurrentApprovalsOneWins(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		for round := range 5 {
			req, _ := f.svc.Create(ctx, paymentRequest("alice", "bob"))
			c1, r1 := f.sign(t, req.ID, vocab.Approve, alice)
			c2, r2 := f.sign(t, req.ID, vocab.Approve, bob)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, job := range []struct {
				c string
				r []byte
			}{{c1, r1}, {c2, r2}} {
				wg.Go(func() { _, errs[i] = f.svc.FinishDecision(ctx, req.ID, job.c, job.r) })
			}
			wg.Wait()
			if (errs[0] == nil) == (errs[1] == nil) {
				t.Fatalf("round %d: both or neither won: %v", round, errs)
			}
			for _, err := range errs {
				if err != nil && !errors.Is(err, ErrNotPending) {
					t.Fatalf("loser's error %v", err)
				}
			}
			var wins atomic.Int32
			for range 4 {
				wg.Go(func() {
					if f.svc.BeginExecution(ctx, req.ID) == nil {
						wins.Add(1)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Fatalf("round %d: %d executions claimed", round, wins.Load())
			}
			n := 0
			for _, k := range f.rec.Kinds(req.ID) {
				if k == vocab.KindApprovalApproved {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d approval.approved entries", n)
			}
		}
	})
}

// Two approvers of a quorum of two tapping at the same moment are both
// counted, and their second vote approves the request once: each
// decision counts the quorum from what it read, so on PostgreSQL the two
// transactions must not both read one vote (InTx's SERIALIZABLE re-runs
// the later one, which then sees the first's vote).
func TestQuorumOfTwoTappedAtOnceApprovesOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		for round := range 5 {
			nr := paymentRequest("alice", "bob")
			nr.Quorum = 2
			req, err := f.svc.Create(ctx, nr)
			if err != nil || req.Quorum != 2 {
				t.Fatalf("create: %v (quorum %d)", err, req.Quorum)
			}
			c1, r1 := f.sign(t, req.ID, vocab.Approve, alice)
			c2, r2 := f.sign(t, req.ID, vocab.Approve, bob)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, job := range []struct {
				c string
				r []byte
			}{{c1, r1}, {c2, r2}} {
				wg.Go(func() { _, errs[i] = f.svc.FinishDecision(ctx, req.ID, job.c, job.r) })
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("round %d: a vote was not counted: %v", round, errs)
			}
			got, err := f.svc.Get(ctx, req.ID)
			if err != nil || got.State != vocab.StateApproved || len(got.Approvals) != 2 {
				t.Fatalf("round %d: %+v (%v), want approved by both", round, got, err)
			}
			approved := 0
			for _, k := range f.rec.Kinds(req.ID) {
				if k == vocab.KindApprovalApproved {
					approved++
				}
			}
			if approved != 1 {
				t.Fatalf("round %d: %d approval.approved entries, want 1", round, approved)
			}
		}
		t.Logf("%s: %d transactions re-run after a conflict", db.Dialect(), db.Retries())
	})
}
