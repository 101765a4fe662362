package approval

import (
	"bufio"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"

	"github.com/countersign/countersign/approval/approvaltest"
)

// childReplicaURL, set, makes the test binary a child replica on that
// database (TestChildApprovalReplica).
const childReplicaURL = "COUNTERSIGN_APPROVAL_TEST_CHILD_URL"

// killOwners are short, so that a killed replica is found dead soon.
var killOwners = store.OwnerOptions{Heartbeat: 200 * time.Millisecond, Grace: time.Second}

// TestChildApprovalReplica is not a test: it is the replica
// TestKilledReplicasRequestsAreReaped runs in a child process and kills.
// It raises a block-mode and a poll-mode request, prints their ids and
// waits to be killed.
func TestChildApprovalReplica(t *testing.T) {
	url := os.Getenv(childReplicaURL)
	if url == "" {
		return
	}
	ctx := context.Background()
	db, err := store.Connect(ctx, url)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	owners, err := store.OwnersFor(ctx, db, killOwners)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	svc, err := New(ctx, db, &approvaltest.Recorder{}, Options{
		RPID: "localhost", Origins: []string{testOrigin}, Approvers: testApprovers, Owners: owners,
	})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	block, err := svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	poll, err := svc.Create(ctx, pollRequest("alice"))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("raised", block.ID, poll.ID)
	select {}
}

// A replica killed with a block-mode and a poll-mode request pending:
// the live replica's reaper, once the grace has passed, cancels the
// block-mode request (once) and leaves the poll-mode one pending, and it
// is approved there.
func TestKilledReplicasRequestsAreReaped(t *testing.T) {
	url := pgtest.URL(t)
	db := storetest.Connect(t, url)
	owners, err := store.OwnersFor(context.Background(), db, killOwners)
	if err != nil {
		t.Fatal(err)
	}
	b := fixtureOn(t, t.TempDir(), db, func(o *Options) { o.Owners = owners })
	alice := approvaltest.NewSoftKey(t, "localhost", testOrigin)
	b.enroll(t, "alice", alice)

	cmd := osexec.Command(os.Args[0], "-test.run=^TestChildApprovalReplica$", "-test.count=1")
	cmd.Env = append(os.Environ(), childReplicaURL+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 4)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var blockID, pollID string
	select {
	case line := <-lines:
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "raised" {
			t.Fatalf("child said %q", line)
		}
		blockID, pollID = f[1], f[2]
	case <-time.After(time.Minute):
		t.Fatal("the child replica raised nothing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if reaped, _, err := b.svc.Reap(ctx); err != nil || len(reaped) != 0 {
		t.Fatalf("reap while the child lives: %v, %v", reaped, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	var reaped []string
	for len(reaped) == 0 {
		if reaped, _, err = b.svc.Reap(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the killed replica's block-mode request was never reaped")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !slices.Equal(reaped, []string{blockID}) {
		t.Fatalf("reaped %v, want %s", reaped, blockID)
	}
	if again, _, err := b.svc.Reap(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second reap: %v, %v", again, err)
	}
	if got := b.rec.Kinds(blockID); !slices.Equal(got, []vocab.Kind{vocab.KindApprovalCancelled}) {
		t.Fatalf("entries for the killed replica's block-mode request %v, want one cancellation", got)
	}
	if r, _ := b.svc.Get(ctx, blockID); r.State != vocab.StateCancelled || r.Reason != ReasonRestarted {
		t.Fatalf("block-mode request: %s %q", r.State, r.Reason)
	}
	r, err := b.decide(t, pollID, vocab.Approve, alice)
	if err != nil || r.State != vocab.StateApproved {
		t.Fatalf("approving the killed replica's poll request on the live one: %+v, %v", r, err)
	}
}
