package main

import (
	"os"
	"testing"
	"time"
)

// The figure is read from /proc: a process that keeps a core busy must see
// its CPU time grow.
func TestCPUTimeGrowsWhileSpinning(t *testing.T) {
	before, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		now, err := cpuTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now > before {
			return
		}
	}
	t.Fatal("CPU time did not grow in 20 s of spinning")
}
