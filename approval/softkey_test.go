package approval

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// softKey is a security key in software: an ECDSA P-256 credential that
// builds authenticatorData and clientDataJSON and signs them as a CTAP2
// authenticator would. Tests can make it misbehave on purpose.
type softKey struct {
	priv    *ecdsa.PrivateKey
	id      []byte
	counter uint32
	rpID    string
	origin  string
	uv      bool
	handle  []byte
}

func newSoftKey(t testing.TB, rpID, origin string) *softKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &softKey{priv: priv, id: id, rpID: rpID, origin: origin, uv: true}
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (k *softKey) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": k.origin, "crossOrigin": false})
	return b
}

func (k *softKey) authData(extra []byte, at bool) []byte {
	rp := sha256.Sum256([]byte(k.rpID))
	flags := byte(0x01) // UP
	if k.uv {
		flags |= 0x04
	}
	if at {
		flags |= 0x40
	}
	out := append(rp[:], flags)
	out = binary.BigEndian.AppendUint32(out, k.counter)
	return append(out, extra...)
}

func (k *softKey) coseKey() []byte {
	x := k.priv.PublicKey.X.FillBytes(make([]byte, 32))
	y := k.priv.PublicKey.Y.FillBytes(make([]byte, 32))
	em, _ := cbor.CTAP2EncOptions().EncMode()
	b, err := em.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
	if err != nil {
		panic(err)
	}
	return b
}

// create answers navigator.credentials.create() options with a "none"
// attestation.
func (k *softKey) create(t testing.TB, publicKey json.RawMessage) []byte {
	t.Helper()
	var opts struct {
		Challenge string `json:"challenge"`
		User      struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if err := json.Unmarshal(publicKey, &opts); err != nil {
		t.Fatal(err)
	}
	k.handle, _ = base64.RawURLEncoding.DecodeString(opts.User.ID)
	cd := k.clientData("webauthn.create", opts.Challenge)
	attested := make([]byte, 16) // zero AAGUID
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(k.id)))
	attested = append(attested, k.id...)
	attested = append(attested, k.coseKey()...)
	em, _ := cbor.CTAP2EncOptions().EncMode()
	att, err := em.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": k.authData(attested, true)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"id": enc(k.id), "rawId": enc(k.id), "type": "public-key",
		"response":               map[string]any{"clientDataJSON": enc(cd), "attestationObject": enc(att), "transports": []string{"usb"}},
		"clientExtensionResults": map[string]any{},
	})
	return b
}

// get answers navigator.credentials.get() for challenge (base64url).
func (k *softKey) get(challenge string) []byte {
	k.counter++
	return k.sign(k.clientData("webauthn.get", challenge), k.authData(nil, false))
}

func (k *softKey) sign(cd, ad []byte) []byte {
	h := sha256.Sum256(cd)
	msg := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, msg[:])
	if err != nil {
		panic(err)
	}
	resp := map[string]any{"clientDataJSON": enc(cd), "authenticatorData": enc(ad), "signature": enc(sig)}
	if k.handle != nil {
		resp["userHandle"] = enc(k.handle)
	}
	b, _ := json.Marshal(map[string]any{
		"id": enc(k.id), "rawId": enc(k.id), "type": "public-key",
		"response": resp, "clientExtensionResults": map[string]any{},
	})
	return b
}

const testOrigin = "http://localhost:8710"

type fixture struct {
	svc *Service
	rec *approvaltest.Recorder
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
	res, err := f.svc.FinishEnrollment(ctx, token, opts.Ceremony, key.create(t, opts.PublicKey))
	if err != nil {
		t.Fatalf("enroll %s: %v", approver, err)
	}
	if !res.Done || res.CredentialID != enc(key.id) {
		t.Fatalf("enroll result %+v", res)
	}
}

// sign runs one decision ceremony with key and returns the raw response
// and the ceremony id it answered.
func (f *fixture) sign(t testing.TB, id string, decision vocab.Decision, key *softKey) (ceremony string, response []byte) {
	t.Helper()
	opts, err := f.svc.BeginDecision(context.Background(), id, decision)
	if err != nil {
		t.Fatalf("begin %s: %v", decision, err)
	}
	return opts.Ceremony, key.get(opts.PublicKey.Challenge.String())
}

func (f *fixture) decide(t *testing.T, id string, decision vocab.Decision, key *softKey) (*Request, error) {
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
