package tools

import "testing"

// The shipped configuration has a policy for CIBA requests; it must not
// become a tool an agent can call.
func TestCIBAPolicyIsNoTool(t *testing.T) {
	c := shipped(t)
	if _, ok := c.Tools["ciba"]; !ok {
		t.Fatal("the shipped configuration has no tools.ciba")
	}
	r, _ := registry(t, c)
	if _, ok := r.Lookup("ciba"); ok {
		t.Error("ciba registered as a tool")
	}
}
