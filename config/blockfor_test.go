package config

import (
	"strings"
	"testing"
	"time"
)

// approval.block_for defaults under the 60 s request timeout of common
// clients, 0 turns it off, and a negative one is refused by name.
func TestBlockForHasADefaultUnderClientTimeoutsAndANamedError(t *testing.T) {
	c, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Approval.BlockFor != 50*time.Second {
		t.Errorf("default block_for %v, want 50s", c.Approval.BlockFor)
	}
	if c, err := Parse([]byte(minimal+"approval:\n  block_for: 0s\n"), "off.yaml"); err != nil || c.Approval.BlockFor != 0 {
		t.Errorf("block_for 0: %v, %v", c, err)
	}
	_, err = Parse([]byte(minimal+"approval:\n  block_for: -5s\n"), "bad.yaml")
	if err == nil || !strings.Contains(err.Error(), "approval.block_for: expected 0 (a call waits until decided) or a positive duration") {
		t.Errorf("negative block_for: %v", err)
	}
}
