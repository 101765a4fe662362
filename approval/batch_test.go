package approval

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/verify"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// batchRequest is a batchable high request of approvers, with quorum.
func batchRequest(quorum int, approvers ...string) NewRequest {
	nr := paymentRequest(approvers...)
	nr.Batchable, nr.Quorum = true, quorum
	return nr
}

func (f *fixture) create(t testing.TB, nr NewRequest) string {
	t.Helper()
	r, err := f.svc.Create(context.Background(), nr)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// signBatch begins a batch of ids and has key sign it.
func (f *fixture) signBatch(t testing.TB, ids []string, key *approvaltest.SoftKey) (*BatchOptions, []byte) {
	t.Helper()
	opts, err := f.svc.BeginBatch(context.Background(), ids)
	if err != nil {
		t.Fatalf("begin batch: %v", err)
	}
	return opts, key.Get(opts.PublicKey.Challenge.String())
}

// requireUntouched fails unless every request is pending with no approval:
// a refused batch changes nothing.
func (f *fixture) requireUntouched(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		r, err := f.svc.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != vocab.StatePending || len(r.Approvals) != 0 {
			t.Fatalf("request %s after a refused batch: %s with approvals %v", id, r.State, r.Approvals)
		}
	}
}

// One tap approves three requests: the key signs the batch challenge of
// their digests, each request counts it once, and each runs once. The
// quorum still applies per request, and the same assertion cannot count
// twice.
func TestBatchApprovesEachRequestOnce(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		f := fixtureOn(t, t.TempDir(), db)
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		ids := []string{f.create(t, batchRequest(2, "alice", "bob")), f.create(t, batchRequest(2, "alice", "bob")), f.create(t, batchRequest(2, "alice", "bob"))}

		opts, signed := f.signBatch(t, ids, alice)
		// The challenge is the batch challenge of the requests' own digests,
		// computed here from what the service says each request is.
		var digests [][32]byte
		for _, id := range ids {
			r, _ := f.svc.load(ctx, f.db, id)
			d, _ := f.svc.digest(r, vocab.Approve)
			digests = append(digests, d)
		}
		sorted, _ := digest.SortBatch(digests)
		want, _ := digest.BatchChallenge(sorted)
		if opts.PublicKey.Challenge.String() != enc(want[:]) {
			t.Fatalf("batch challenge %s, want %s", opts.PublicKey.Challenge, enc(want[:]))
		}
		if !slices.Equal(slices.Sorted(slices.Values(opts.Requests)), slices.Sorted(slices.Values(ids))) {
			t.Fatalf("ceremony requests %v, want %v", opts.Requests, ids)
		}
		got, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if r.State != vocab.StatePending || !slices.Equal(r.Approvals, []string{"alice"}) {
				t.Fatalf("after alice's batch, one of two: %s %v", r.State, r.Approvals)
			}
		}

		// The same assertion on a fresh ceremony of the same set.
		again, err := f.svc.BeginBatch(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.FinishBatch(ctx, ids, again.Ceremony, signed); !errors.Is(err, ceremony.ErrReplay) {
			t.Fatalf("replayed batch assertion: %v", err)
		}
		f.rec.RequireRejected(t, ceremony.ErrReplay.Check)
		// alice is counted on all three, so a batch of them is bob's alone.
		if _, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed); !errors.Is(err, ceremony.ErrCeremony) {
			t.Fatalf("used ceremony: %v", err)
		}

		opts, signed = f.signBatch(t, ids, bob)
		got, err = f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range got {
			if r.State != vocab.StateApproved || r.DecidedBy != "alice,bob" {
				t.Fatalf("after bob's batch: %s by %q", r.State, r.DecidedBy)
			}
			if r.ID != opts.Requests[i] {
				t.Fatalf("results out of batch order: %s at %d, ceremony says %s", r.ID, i, opts.Requests[i])
			}
		}
		for _, id := range ids {
			if err := f.svc.BeginExecution(ctx, id); err != nil {
				t.Fatal(err)
			}
			if err := f.svc.BeginExecution(ctx, id); !errors.Is(err, ErrNotApproved) {
				t.Fatalf("second execution of %s: %v", id, err)
			}
			if want := []vocab.Kind{vocab.KindApprovalRequested, vocab.KindApprovalAssertion, vocab.KindApprovalRejected, vocab.KindApprovalRejected, vocab.KindApprovalAssertion, vocab.KindApprovalApproved}; !slices.Equal(f.rec.Kinds(id), want) {
				t.Fatalf("kinds of %s: %v, want %v", id, f.rec.Kinds(id), want)
			}
		}

		// Each assertion entry carries bob's one assertion, the list and its
		// request's place in it.
		var bobs []audit.Entry
		for _, e := range f.rec.Entries() {
			if e.Kind == vocab.KindApprovalAssertion && e.Approver == "bob" {
				bobs = append(bobs, e)
			}
		}
		if len(bobs) != 3 {
			t.Fatalf("%d assertion entries of bob, want 3", len(bobs))
		}
		for _, e := range bobs {
			if e.Signature != bobs[0].Signature || !slices.Equal(e.BatchDigests, bobs[0].BatchDigests) || len(e.BatchDigests) != 3 {
				t.Fatalf("entries of one batch differ: %+v", e)
			}
			r, _ := f.svc.load(ctx, f.db, e.RequestID)
			d, _ := f.svc.digest(r, vocab.Approve)
			if e.BatchDigests[e.BatchPosition] != hex.EncodeToString(d[:]) {
				t.Fatalf("request %s is not at batch_position %d", e.RequestID, e.BatchPosition)
			}
			cd, _ := base64.RawURLEncoding.DecodeString(e.ClientDataJSON)
			if !bytes.Contains(cd, []byte(opts.PublicKey.Challenge.String())) {
				t.Fatalf("entry's client data does not carry the batch challenge: %s", cd)
			}
		}
	})
}

// Every refusal fails closed, changes none of the requests, and is
// recorded on each of them with the check that refused it.
func TestBatchRefusals(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		var nowNS atomic.Int64
		nowNS.Store(time.Now().UnixNano())
		f := fixtureOn(t, t.TempDir(), db, func(o *Options) {
			o.Now = func() time.Time { return time.Unix(0, nowNS.Load()) }
			o.MaxBatch = 3
		})
		ctx := context.Background()
		alice, bob := approvaltest.NewSoftKey(t, "localhost", testOrigin), approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		f.enroll(t, "bob", bob)
		pair := func() []string {
			return []string{f.create(t, batchRequest(1, "alice", "bob")), f.create(t, batchRequest(1, "alice", "bob"))}
		}

		t.Run("approver not eligible for one", func(t *testing.T) {
			ids := append(pair(), f.create(t, batchRequest(1, "bob")))
			// Only bob's key is offered; alice's signs anyway.
			opts, signed := f.signBatch(t, ids, alice)
			if _, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed); !errors.Is(err, ceremony.ErrApproverNotAllowed) {
				t.Fatalf("got %v", err)
			}
			f.rec.RequireRejected(t, ceremony.ErrApproverNotAllowed.Check)
			f.requireUntouched(t, ids...)
			// Nobody may approve both a request of alice's and one of bob's.
			if _, err := f.svc.BeginBatch(ctx, []string{f.create(t, batchRequest(1, "alice")), ids[2]}); !errors.Is(err, ErrNoCredentials) {
				t.Fatalf("begin with no common approver: %v", err)
			}
		})

		t.Run("critical request", func(t *testing.T) {
			critical := batchRequest(2, "alice", "bob")
			critical.Level = "critical"
			ids := append(pair(), f.create(t, critical))
			if r, _ := f.svc.Get(ctx, ids[2]); r.Batchable {
				t.Fatal("a critical request was raised batchable")
			}
			if _, err := f.svc.BeginBatch(ctx, ids); !errors.Is(err, ErrNotBatchable) {
				t.Fatalf("got %v", err)
			}
			// Nor can a ceremony of another selection carry it.
			opts, signed := f.signBatch(t, ids[:2], alice)
			if _, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed); !errors.Is(err, ceremony.ErrCeremony) {
				t.Fatalf("finish with another selection's ceremony: %v", err)
			}
			f.rec.RequireRejected(t, ceremony.ErrCeremony.Check)
			f.requireUntouched(t, ids...)
		})

		t.Run("tool not batchable", func(t *testing.T) {
			ids := append(pair(), f.create(t, paymentRequest("alice", "bob")))
			if _, err := f.svc.BeginBatch(ctx, ids); !errors.Is(err, ErrNotBatchable) {
				t.Fatalf("got %v", err)
			}
			f.requireUntouched(t, ids...)
		})

		t.Run("one decided meanwhile", func(t *testing.T) {
			ids := pair()
			opts, signed := f.signBatch(t, ids, alice)
			if _, err := f.decide(t, ids[1], vocab.Deny, bob); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed); !errors.Is(err, ErrNotPending) {
				t.Fatalf("got %v", err)
			}
			f.rec.RequireRejected(t, ErrNotPending.Check)
			f.requireUntouched(t, ids[0])
			// All or nothing: the assertion was not spent on ids[0] either.
			if _, err := f.svc.BeginBatch(ctx, ids); !errors.Is(err, ErrNotPending) {
				t.Fatalf("begin with a denied request: %v", err)
			}
		})

		t.Run("expired", func(t *testing.T) {
			ids := pair()
			opts, signed := f.signBatch(t, ids, alice)
			nowNS.Add(int64(2 * time.Minute))
			if _, err := f.svc.FinishBatch(ctx, ids, opts.Ceremony, signed); !errors.Is(err, ErrExpired) {
				t.Fatalf("got %v", err)
			}
			f.rec.RequireRejected(t, ErrExpired.Check)
			for _, id := range ids {
				if r, _ := f.svc.Get(ctx, id); r.State != vocab.StateExpired {
					t.Fatalf("%s is %s", id, r.State)
				}
			}
		})

		t.Run("assertion moved to another set", func(t *testing.T) {
			ab, c := pair(), f.create(t, batchRequest(1, "alice", "bob"))
			_, signed := f.signBatch(t, ab, alice)
			ac := []string{ab[0], c}
			opts, err := f.svc.BeginBatch(ctx, ac)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.FinishBatch(ctx, ac, opts.Ceremony, signed); !errors.Is(err, ceremony.ErrChallenge) {
				t.Fatalf("got %v", err)
			}
			f.rec.RequireRejected(t, ceremony.ErrChallenge.Check)
			// A subset is another set too.
			opts, err = f.svc.BeginBatch(ctx, ab[:1])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.FinishBatch(ctx, ab[:1], opts.Ceremony, signed); !errors.Is(err, ceremony.ErrChallenge) {
				t.Fatalf("subset: %v", err)
			}
			// And a single request's own decision.
			single, err := f.svc.BeginDecision(ctx, ab[0], vocab.Approve)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.FinishDecision(ctx, ab[0], single.Ceremony, signed); !errors.Is(err, ceremony.ErrChallenge) {
				t.Fatalf("batch assertion as a single decision: %v", err)
			}
			f.requireUntouched(t, ab[0], ab[1], c)
		})

		t.Run("a single decision's assertion as a batch of one", func(t *testing.T) {
			id := f.create(t, batchRequest(1, "alice", "bob"))
			_, signed := f.sign(t, id, vocab.Approve, alice)
			opts, err := f.svc.BeginBatch(ctx, []string{id})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.FinishBatch(ctx, []string{id}, opts.Ceremony, signed); !errors.Is(err, ceremony.ErrChallenge) {
				t.Fatalf("got %v", err)
			}
			f.requireUntouched(t, id)
		})

		t.Run("oversize or repeated", func(t *testing.T) {
			ids := append(pair(), pair()...)
			if _, err := f.svc.BeginBatch(ctx, ids); !errors.Is(err, ErrBatchSize) {
				t.Fatalf("4 over max_batch 3: %v", err)
			}
			if _, err := f.svc.FinishBatch(ctx, ids, ids[0], []byte(`{}`)); !errors.Is(err, ErrBatchSize) {
				t.Fatalf("finish of 4 over max_batch 3: %v", err)
			}
			if _, err := f.svc.BeginBatch(ctx, []string{ids[0], ids[0]}); !errors.Is(err, ErrBatchSize) {
				t.Fatalf("repeated: %v", err)
			}
			if _, err := f.svc.BeginBatch(ctx, nil); !errors.Is(err, ErrBatchSize) {
				t.Fatalf("empty: %v", err)
			}
			f.requireUntouched(t, ids...)
		})
	})
}

// With the real audit log, an export of a batch approval verifies
// offline, and stops verifying when a request's digest in the signed list
// is changed or removed, even with every entry re-signed by the server
// key.
func TestBatchExportVerifies(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f, log, key := loggedFixtureOn(t, db)
		svc := f.svc
		alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
		f.enroll(t, "alice", alice)
		ids := []string{f.create(t, batchRequest(1, "alice")), f.create(t, batchRequest(1, "alice", "bob")), f.create(t, batchRequest(1, "alice"))}
		opts, signed := f.signBatch(t, ids, alice)
		approved, err := svc.FinishBatch(ctx, ids, opts.Ceremony, signed)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range approved {
			ran(t, svc, log, r)
		}

		export, sum := verifiedExport(t, log)
		if sum.Assertions != 3 || sum.Approvals != 3 || sum.Executions != 3 {
			t.Fatalf("verified %d assertions, %d approvals, %d executions, want 3 each: %s", sum.Assertions, sum.Approvals, sum.Executions, sum)
		}

		middle := opts.Requests[1] // at batch_position 1
		forge := func(change func(e *audit.Entry)) error {
			entries := exportEntries(t, export)
			for i := range entries {
				if entries[i].Kind == vocab.KindApprovalAssertion && entries[i].RequestID == middle {
					change(&entries[i])
				}
			}
			_, err := verify.Export(bytes.NewReader(resignExport(t, key, entries)), log.PublicKey(), verify.Options{})
			return err
		}
		var ve *verify.Error
		err = forge(func(e *audit.Entry) {
			e.BatchDigests = slices.Clone(e.BatchDigests)
			e.BatchDigests[1] = strings.Repeat("0", 64)
		})
		if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "this entry's action digest is not batch_digests[1]") {
			t.Fatalf("request's digest tampered in the list: %v", err)
		}
		err = forge(func(e *audit.Entry) {
			e.BatchDigests = slices.Delete(slices.Clone(e.BatchDigests), 1, 2)
			e.BatchPosition = 0
		})
		if !errors.As(err, &ve) || !strings.Contains(ve.Reason, "this entry's action digest is not batch_digests[0]") {
			t.Fatalf("request's digest removed from the list: %v", err)
		}
	})
}
