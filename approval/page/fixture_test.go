package page

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// The service the page tests serve: a real database, an audit log in
// memory, approvers alice and bob (treasury) and carol (ops).

const testOrigin = "http://localhost:8710"

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

type fixture struct {
	svc  *approval.Service
	opts approval.Options // svc's, to start it again over the same database
	rec  *approvaltest.Recorder
	db   *store.DB
	dir  string
}

var testApprovers = []approval.Approver{
	{ID: "alice", Name: "Alice Example", Roles: []string{"treasury"}},
	{ID: "bob", Name: "Bob Example", Roles: []string{"treasury"}},
	{ID: "carol", Name: "Carol Example", Roles: []string{"ops"}},
}

func newFixture(t testing.TB, tweak ...func(*approval.Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	rec := &approvaltest.Recorder{}
	opts := approval.Options{
		RPID: "localhost", RPName: "Countersign", Origins: []string{testOrigin}, PublicURL: testOrigin,
		Approvers: testApprovers, PollInterval: time.Second,
	}
	if db.Dialect() == store.PostgreSQL {
		// As the daemon runs a replica: its liveness in the replicas table.
		owners, err := store.OwnersFor(ctx, db, store.OwnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Owners = owners
	}
	for _, f := range tweak {
		f(&opts)
	}
	svc, err := approval.New(ctx, db, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &fixture{svc: svc, opts: opts, rec: rec, db: db, dir: dir}
}

// enroll registers key for approver through a one-time link, in Go.
func (f *fixture) enroll(t testing.TB, approver string, key *approvaltest.SoftKey) {
	t.Helper()
	ctx := context.Background()
	link, err := f.svc.CreateEnrollment(ctx, approver)
	if err != nil {
		t.Fatal(err)
	}
	token := link[strings.LastIndex(link, "/")+1:]
	opts, err := f.svc.BeginEnrollment(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.FinishEnrollment(ctx, token, opts.Ceremony, key.Create(t, opts.PublicKey))
	if err != nil || !res.Done {
		t.Fatalf("enroll %s: %+v %v", approver, res, err)
	}
}

func (f *fixture) create(t testing.TB, nr approval.NewRequest) string {
	t.Helper()
	r, err := f.svc.Create(context.Background(), nr)
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// decide runs one decision ceremony with key, in Go.
func (f *fixture) decide(t *testing.T, id string, decision vocab.Decision, key *approvaltest.SoftKey) (*approval.Request, error) {
	t.Helper()
	opts, err := f.svc.BeginDecision(context.Background(), id, decision)
	if err != nil {
		t.Fatalf("begin %s: %v", decision, err)
	}
	return f.svc.FinishDecision(context.Background(), id, opts.Ceremony, key.Get(opts.PublicKey.Challenge.String()))
}

func paymentRequest(approvers ...string) approval.NewRequest {
	return approval.NewRequest{
		Tool:                 "transfer",
		Agent:                "agent-1",
		Args:                 digest.MustParseArgs(`{"to":"Vendor X","amount":500000,"currency":"USD","from":"operating"}`),
		AuthorizationDetails: json.RawMessage(`[{"type":"payment_initiation","actions":["transfer"],"instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X","debtorAccount":{"id":"operating"},"newCounterparty":true}]`),
		Summary:              "Pay USD 500,000.00 from operating to Vendor X",
		Level:                "high",
		Rule:                 "amount > 10000",
		Approvers:            approvers,
		Timeout:              time.Minute,
	}
}

// batchRequest is a batchable high request of approvers, with quorum.
func batchRequest(quorum int, approvers ...string) approval.NewRequest {
	nr := paymentRequest(approvers...)
	nr.Batchable, nr.Quorum = true, quorum
	return nr
}

// requireUntouched fails t unless each request is pending with no approval.
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
