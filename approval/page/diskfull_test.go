package page

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/fulldisk"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// A tap that cannot be recorded tells the approver so, and whether the
// decision stands: on a full disk nothing was approved; when only the
// audit log refuses, the decision is stored and its entry waits.
func TestATapThatCannotBeRecordedSaysWhatHappened(t *testing.T) {
	storetest.SQLiteOnly(t, "fills the disk the SQLite file is on; PostgreSQL's is the database server's")
	ctx := context.Background()
	disk := fulldisk.Mount(t, 16<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	base := fmt.Sprintf("http://localhost:%d", port)
	rec := &approvaltest.Recorder{}
	svc, err := approval.New(ctx, storetest.Connect(t, filepath.Join(disk.Dir, store.FileName)), rec, approval.Options{
		RPID: "localhost", RPName: "Countersign", Origins: []string{base}, PublicURL: base,
		Approvers: testApprovers, PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv := &http.Server{Handler: Handler(svc, Options{Origins: []string{base}, PublicURL: base, AllowedHosts: []string{fmt.Sprintf("localhost:%d", port)}}),
		ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	page := approvaltest.NewPage(ln.Addr().String(), base)
	alice := approvaltest.NewSoftKey(t, "localhost", base)
	link, err := svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := page.Enroll(link, alice); err != nil {
		t.Fatal(err)
	}
	req, err := svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	tap := func() error {
		t.Helper()
		ceremony, challenge, err := page.BeginDecision(req.ID, string(vocab.Approve))
		if err != nil {
			t.Fatal(err)
		}
		disk.Fill(t)
		defer disk.Release(t)
		_, err = page.FinishDecision(req.ID, ceremony, alice.Get(challenge))
		return err
	}

	var pe *approvaltest.Error
	if err := tap(); !errors.As(err, &pe) || pe.Status != http.StatusServiceUnavailable || pe.Msg != msgNotRecorded {
		t.Fatalf("a tap on a full disk: %v, want 503 %q", err, msgNotRecorded)
	}
	if r, err := svc.Get(ctx, req.ID); err != nil || r.State != vocab.StatePending {
		t.Fatalf("request after the tap that could not be recorded: %+v, %v", r, err)
	}

	rec.SetFail(true) // the database takes the decision; the log does not
	ceremony, challenge, err := page.BeginDecision(req.ID, string(vocab.Approve))
	if err != nil {
		t.Fatal(err)
	}
	_, err = page.FinishDecision(req.ID, ceremony, alice.Get(challenge))
	if !errors.As(err, &pe) || pe.Status != http.StatusServiceUnavailable || pe.Msg != msgEntryWaits {
		t.Fatalf("a tap the log cannot take: %v, want 503 %q", err, msgEntryWaits)
	}
	// Stored, it stands: once the log takes entries again the outbox
	// reaches it and the request shows approved, with no second tap.
	rec.SetFail(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := svc.Get(ctx, req.ID)
		if err == nil && r.State == vocab.StateApproved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stored decision never showed once the log took it: %v, %v", r.State, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
