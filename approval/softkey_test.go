package approval

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
)

// softKey is the shared software security key; tests here make it
// misbehave through its fields.
type softKey = approvaltest.SoftKey

func newSoftKey(t testing.TB, rpID, origin string) *softKey {
	t.Helper()
	k, err := approvaltest.NewSoftKey(rpID, origin)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// create answers creation options with the key, failing the test on error.
func create(t testing.TB, k *softKey, publicKey json.RawMessage) []byte {
	t.Helper()
	b, err := k.Create(publicKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// memRecorder keeps entries in memory; fail makes Append fail.
type memRecorder struct {
	mu      sync.Mutex
	entries []audit.Entry
	fail    bool
}

func (m *memRecorder) Append(_ context.Context, e audit.Entry) (audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return audit.Entry{}, errors.New("disk full")
	}
	e.Seq = int64(len(m.entries) + 1)
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(time.RFC3339Nano)
	}
	m.entries = append(m.entries, e)
	return e, nil
}

func (m *memRecorder) setFail(v bool) { m.mu.Lock(); m.fail = v; m.mu.Unlock() }

func (m *memRecorder) LastSeq(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.entries)), nil
}

func (m *memRecorder) Since(_ context.Context, seq int64, limit int) ([]audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.entries[min(seq, int64(len(m.entries))):]
	return append([]audit.Entry(nil), out[:min(limit, len(out))]...), nil
}

func (m *memRecorder) kinds(requestID string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.entries {
		if requestID == "" || e.RequestID == requestID {
			out = append(out, e.Kind)
		}
	}
	return out
}

func (m *memRecorder) last(kind string) (audit.Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.entries) - 1; i >= 0; i-- {
		if m.entries[i].Kind == kind {
			return m.entries[i], true
		}
	}
	return audit.Entry{}, false
}

// requireRejected asserts the last approval.rejected entry names check.
func (m *memRecorder) requireRejected(t *testing.T, check *CheckError) {
	t.Helper()
	e, ok := m.last(audit.KindApprovalRejected)
	if !ok {
		t.Fatalf("no approval.rejected entry; kinds %v", m.kinds(""))
	}
	if !strings.HasPrefix(e.Reason, check.Check) {
		t.Fatalf("rejected reason %q, want check %q", e.Reason, check.Check)
	}
}

const testOrigin = "http://localhost:8710"

type fixture struct {
	svc *Service
	rec *memRecorder
	db  *sql.DB
	dir string
}

var testApprovers = []Approver{
	{ID: "alice", Name: "Alice Example", Roles: []string{"treasury"}},
	{ID: "bob", Name: "Bob Example", Roles: []string{"treasury"}},
	{ID: "carol", Name: "Carol Example", Roles: []string{"ops"}},
}

func newFixture(t testing.TB, tweak ...func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rec := &memRecorder{}
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
func (f *fixture) enroll(t testing.TB, approver string, key *softKey) {
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
	res, err := f.svc.FinishEnrollment(ctx, token, opts.Ceremony, create(t, key, opts.PublicKey))
	if err != nil {
		t.Fatalf("enroll %s: %v", approver, err)
	}
	if !res.Done || res.CredentialID != enc(key.ID) {
		t.Fatalf("enroll result %+v", res)
	}
}

// sign runs one decision ceremony with key and returns the raw response
// and the ceremony id it answered.
func (f *fixture) sign(t testing.TB, id, decision string, key *softKey) (ceremony string, response []byte) {
	t.Helper()
	opts, err := f.svc.BeginDecision(context.Background(), id, decision)
	if err != nil {
		t.Fatalf("begin %s: %v", decision, err)
	}
	return opts.Ceremony, key.Get(opts.PublicKey.Challenge.String())
}

func (f *fixture) decide(t *testing.T, id, decision string, key *softKey) (*Request, error) {
	t.Helper()
	c, resp := f.sign(t, id, decision, key)
	return f.svc.FinishDecision(context.Background(), id, c, resp)
}

func paymentRequest(approvers ...string) NewRequest {
	return NewRequest{
		Tool:                 "transfer",
		Agent:                "agent-1",
		Args:                 json.RawMessage(`{"to":"Vendor X","amount":500000,"currency":"USD","from":"operating"}`),
		AuthorizationDetails: json.RawMessage(`[{"type":"payment_initiation","actions":["transfer"],"instructedAmount":{"currency":"USD","amount":"500000.00"},"creditorName":"Vendor X","debtorAccount":{"id":"operating"},"newCounterparty":true}]`),
		Summary:              "Pay USD 500,000.00 from operating to Vendor X",
		Level:                "high",
		Rule:                 "amount > 10000",
		Approvers:            approvers,
		Timeout:              time.Minute,
	}
}
