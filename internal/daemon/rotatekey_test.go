package daemon

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/countersign/countersign/approval/sealed"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/internal/daemon/daemontest"
	"github.com/countersign/countersign/store/storetest"
)

// A result sealed before audit rotate-key opens with the keys a server
// started after it loads (its own and the retired ones), for the result
// window after the rotation, and not with the new key alone.
func TestResultSealedBeforeARotationOpensAfterIt(t *testing.T) {
	storetest.SQLiteOnly(t, "rotate-key on a data directory; the PostgreSQL rotation has its own test")
	c := daemontest.Config(t, nil)
	before, err := resultKey(c)
	if err != nil {
		t.Fatal(err)
	}
	old, err := sealed.NewBox(before)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	stored, err := old.Seal("req-1", []byte(`{"ok":true}`), now.Add(c.Approval.ResultTTL))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := RotateKey(context.Background(), c, "yearly", audit.Options{}); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}

	after, err := resultKey(c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(after, before) {
		t.Fatal("the result key did not change with the server key")
	}
	retired, err := retiredResultKeys(c, time.Now())
	if err != nil || len(retired) != 1 {
		t.Fatalf("retired result keys: %d, %v; want 1", len(retired), err)
	}
	box, err := sealed.NewBox(after, retired...)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := box.Open("req-1", stored, now); string(got) != `{"ok":true}` {
		t.Fatalf("the result sealed before the rotation opened to %q", got)
	}
	// New results are sealed with the new key.
	fresh, _ := box.Seal("req-2", []byte("new"), now.Add(time.Hour))
	if got, _ := old.Open("req-2", fresh, now); got != nil {
		t.Fatal("a result sealed after the rotation opened with the retired key")
	}
	if nb, _ := sealed.NewBox(after); nb != nil {
		if got, _ := nb.Open("req-1", stored, now); got != nil {
			t.Fatal("the new key alone opened a result sealed before the rotation")
		}
	}
	// Past the result window after the rotation nothing sealed before it
	// is kept, and the retired key is no longer loaded.
	if later, err := retiredResultKeys(c, time.Now().Add(c.Approval.ResultTTL+time.Minute)); err != nil || len(later) != 0 {
		t.Fatalf("retired result keys a window after the rotation: %d, %v; want none", len(later), err)
	}
}
