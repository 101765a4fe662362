package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The short version of the load test, for the test suite: a few sessions
// for a few seconds, one SIGKILL.
func TestShortLoadSurvivesAKill(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "countersign")
	build := exec.Command("go", "build", "-o", bin, "./cmd/countersign")
	build.Dir = root
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Options{
		Bin: bin, Root: root, Dir: t.TempDir(), Sessions: 4,
		Duration: 6 * time.Second, KillAfter: 3 * time.Second, Log: testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *rep)
	for _, v := range rep.Violations {
		t.Error(v)
	}
	if rep.Calls < 20 || rep.Acked == 0 || rep.Approved == 0 {
		t.Errorf("the load barely ran: %+v", *rep)
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }
