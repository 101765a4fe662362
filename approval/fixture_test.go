package approval

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store/storetest"
)

// enc is base64url without padding, as WebAuthn's JSON writes ids and
// challenges.
func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

const testOrigin = "http://localhost:8710"

type fixture struct {
	svc *Service
	rec *approvaltest.Recorder
	db  *store.DB
	dir string
}

var testApprovers = []Approver{
	{ID: "alice", Name: "Alice Example", Roles: []string{"treasury"}},
	{ID: "bob", Name: "Bob Example", Roles: []string{"treasury"}},
	{ID: "carol", Name: "Carol Example", Roles: []string{"ops"}},
}

func newFixture(t testing.TB, tweak ...func(*Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	db := storetest.Connect(t, filepath.Join(dir, store.FileName))
	if db.Dialect() == store.PostgreSQL {
		// As the daemon runs a replica: its liveness in the replicas table.
		owners, err := store.OwnersFor(context.Background(), db, store.OwnerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tweak = append([]func(*Options){func(o *Options) { o.Owners = owners }}, tweak...)
	}
	return fixtureOn(t, dir, db, tweak...)
}

// fixtureOn is a fixture on db, of either dialect; dir is the test's
// directory.
func fixtureOn(t testing.TB, dir string, db *store.DB, tweak ...func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	rec := &approvaltest.Recorder{}
	opts := Options{
		RPID: "localhost", RPName: "Countersign", Origins: []string{testOrigin}, PublicURL: testOrigin,
		Approvers: testApprovers, PollInterval: time.Second,
	}
	for _, f := range tweak {
		f(&opts)
	}
	svc, err := New(ctx, db, rec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &fixture{svc: svc, rec: rec, db: db, dir: dir}
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
	if opts.Step != "create" {
		t.Fatalf("first key of %s: step %q, want create", approver, opts.Step)
	}
	res, err := f.svc.FinishEnrollment(ctx, token, opts.Ceremony, key.Create(t, opts.PublicKey))
	if err != nil {
		t.Fatalf("enroll %s: %v", approver, err)
	}
	if !res.Done || res.CredentialID != enc(key.ID()) {
		t.Fatalf("enroll result %+v", res)
	}
}

// sign runs one decision ceremony with key and returns the raw response
// and the ceremony id it answered.
func (f *fixture) sign(t testing.TB, id string, decision vocab.Decision, key *approvaltest.SoftKey) (ceremony string, response []byte) {
	t.Helper()
	opts, err := f.svc.BeginDecision(context.Background(), id, decision)
	if err != nil {
		t.Fatalf("begin %s: %v", decision, err)
	}
	return opts.Ceremony, key.Get(opts.PublicKey.Challenge.String())
}

func (f *fixture) decide(t *testing.T, id string, decision vocab.Decision, key *approvaltest.SoftKey) (*Request, error) {
	t.Helper()
	c, resp := f.sign(t, id, decision, key)
	return f.svc.FinishDecision(context.Background(), id, c, resp)
}

func paymentRequest(approvers ...string) NewRequest {
	return NewRequest{
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
