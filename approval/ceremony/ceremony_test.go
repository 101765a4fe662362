package ceremony

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

const (
	testRPID   = "localhost"
	testOrigin = "http://localhost:8710"
)

type fixture struct {
	rp    *RP
	db    *store.DB
	clock *approvaltest.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return fixtureOn(t, storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName)))
}

// fixtureOn is a fixture on db, of either dialect.
func fixtureOn(t *testing.T, db *store.DB) *fixture {
	t.Helper()
	clock := approvaltest.NewClock(time.Now())
	rp, err := New(context.Background(), db, Config{
		RPID: testRPID, RPName: "Countersign", Origins: []string{testOrigin},
		EnrollTTL: 10 * time.Minute, Now: clock.Now, Logger: slog.New(slog.DiscardHandler),
		Approver: func(id string) (string, bool) { return "Alice", id == "alice" },
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{rp: rp, db: db, clock: clock}
}

func (f *fixture) inTx(t *testing.T, fn func(tx *sql.Tx) error) error {
	t.Helper()
	return storetest.InTx(t, f.db, fn)
}

// enroll registers key as approver's first key through a link.
func (f *fixture) enroll(t *testing.T, approver string, key *approvaltest.SoftKey) *Registration {
	t.Helper()
	ctx := context.Background()
	var token string
	if err := f.inTx(t, func(tx *sql.Tx) (err error) {
		token, _, err = f.rp.AddLink(ctx, tx, approver, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := f.rp.LinkApprover(ctx, token); err != nil || got != approver {
		t.Fatalf("link approver %q, %v", got, err)
	}
	opts, err := f.rp.BeginEnrollment(ctx, token)
	if err != nil || opts.Step != "create" {
		t.Fatalf("begin enrollment: step %v, %v", opts, err)
	}
	res, reg, err := f.rp.FinishEnrollment(ctx, token, opts.Ceremony, key.Create(t, opts.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Done || reg == nil || reg.CredentialID != B64(key.ID()) || reg.Number != 1 || reg.Format != "none" {
		t.Fatalf("registration %+v, result %+v", reg, res)
	}
	if err := f.inTx(t, func(tx *sql.Tx) error { return f.rp.StoreKey(ctx, tx, reg) }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rp.LinkApprover(ctx, token); !errors.Is(err, ErrEnrollment) {
		t.Fatalf("link after use: %v, want ErrEnrollment", err)
	}
	return reg
}

func (f *fixture) signIn(t *testing.T, key *approvaltest.SoftKey) (string, error) {
	t.Helper()
	opts, err := f.rp.BeginSignIn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return f.rp.FinishSignIn(context.Background(), opts.Ceremony, key.Get(opts.PublicKey.Challenge.String()))
}

// A key enrolled through a link signs its approver in; a ceremony is used
// up by its first finish; a revoked key, or one nobody enrolled, signs
// nobody in, each refusal naming its check.
func TestEnrolledKeySignsInUntilRevoked(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := fixtureOn(t, db)
		alice := approvaltest.NewSoftKey(t, testRPID, testOrigin)
		reg := f.enroll(t, "alice", alice)

		if who, err := f.signIn(t, alice); err != nil || who != "alice" {
			t.Fatalf("sign-in: %q, %v", who, err)
		}
		opts, err := f.rp.BeginSignIn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		resp := alice.Get(opts.PublicKey.Challenge.String())
		if _, err := f.rp.FinishSignIn(ctx, opts.Ceremony, resp); err != nil {
			t.Fatal(err)
		}
		if _, err := f.rp.FinishSignIn(ctx, opts.Ceremony, resp); !errors.Is(err, ErrCeremony) {
			t.Fatalf("second finish of one ceremony: %v, want %v", err, ErrCeremony)
		}
		if _, err := f.signIn(t, approvaltest.NewSoftKey(t, testRPID, testOrigin)); !errors.Is(err, ErrUnknownCredential) {
			t.Fatalf("sign-in with a key nobody enrolled: %v, want %v", err, ErrUnknownCredential)
		}

		var revoked *Key
		if err := f.inTx(t, func(tx *sql.Tx) (err error) {
			revoked, err = f.rp.Revoke(ctx, tx, reg.CredentialID, "lost")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if revoked.Approver != "alice" || B64(revoked.Cred.PublicKey) != reg.PublicKey {
			t.Fatalf("revoked key %+v", revoked)
		}
		if _, err := f.signIn(t, alice); !errors.Is(err, ErrRevokedCredential) {
			t.Fatalf("sign-in with a revoked key: %v, want %v", err, ErrRevokedCredential)
		}
		creds, err := f.rp.Credentials(ctx)
		if err != nil || len(creds) != 1 || !creds[0].Revoked || creds[0].RevokeReason != "lost" || creds[0].ApproverName != "Alice" {
			t.Fatalf("credentials %+v, %v", creds, err)
		}
		if err := f.inTx(t, func(tx *sql.Tx) error {
			_, err := f.rp.Revoke(ctx, tx, "not base64!", "")
			return err
		}); !errors.Is(err, ErrUnknownCredentialID) {
			t.Fatalf("revoke of a malformed id: %v", err)
		}
	})
}

// A second key needs one of the approver's keys to vouch for its link
// first: the link alone registers nothing.
func TestSecondKeyNeedsAVouch(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := fixtureOn(t, db)
		first := approvaltest.NewSoftKey(t, testRPID, testOrigin)
		f.enroll(t, "alice", first)
		var token string
		if err := f.inTx(t, func(tx *sql.Tx) (err error) {
			token, _, err = f.rp.AddLink(ctx, tx, "alice", nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		opts, err := f.rp.BeginEnrollment(ctx, token)
		if err != nil || opts.Step != "get" {
			t.Fatalf("second key's first step: %+v, %v; want get", opts, err)
		}
		var get struct {
			Challenge string `json:"challenge"`
		}
		if err := json.Unmarshal(opts.PublicKey, &get); err != nil {
			t.Fatal(err)
		}
		res, reg, err := f.rp.FinishEnrollment(ctx, token, opts.Ceremony, first.Get(get.Challenge))
		if err != nil || res.Done || reg != nil {
			t.Fatalf("vouch: %+v %+v %v", res, reg, err)
		}
		opts, err = f.rp.BeginEnrollment(ctx, token)
		if err != nil || opts.Step != "create" {
			t.Fatalf("after the vouch: %+v, %v; want create", opts, err)
		}
		second := approvaltest.NewSoftKey(t, testRPID, testOrigin)
		_, reg, err = f.rp.FinishEnrollment(ctx, token, opts.Ceremony, second.Create(t, opts.PublicKey))
		if err != nil || reg.Number != 2 || reg.VouchedBy != B64(first.ID()) {
			t.Fatalf("second registration %+v, %v", reg, err)
		}
	})
}

// Ceremonies nobody finished are deleted once they expire: a flood of
// begins leaves no rows behind (the page's rate limits bound how many
// there are; approval/page tests them).
func TestExpiredCeremoniesAreSwept(t *testing.T) {
	storetest.Dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := fixtureOn(t, db)
		for range 5 {
			if _, err := f.rp.BeginSignIn(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var rows int
		f.db.QueryRow(`SELECT COUNT(*) FROM approval_ceremonies`).Scan(&rows)
		if rows != 5 {
			t.Fatalf("%d ceremony rows after 5 begins", rows)
		}
		if n, err := f.rp.DeleteExpired(ctx); err != nil || n != 0 {
			t.Fatalf("sweep before expiry deleted %d: %v", n, err)
		}
		f.clock.Add(TTL + time.Second)
		if n, err := f.rp.DeleteExpired(ctx); err != nil || int(n) != rows {
			t.Fatalf("sweep deleted %d of %d: %v", n, rows, err)
		}
		f.db.QueryRow(`SELECT COUNT(*) FROM approval_ceremonies`).Scan(&rows)
		if rows != 0 {
			t.Fatalf("%d ceremonies left after the sweep", rows)
		}
	})
}
