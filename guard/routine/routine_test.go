package routine

import (
	"slices"
	"testing"
)

// The mark never passes a call whose outcome lies beyond it, so that the
// next start pairs every outcome with its own call; a call whose outcome
// was lost holds it until the outcome is recorded late.
func TestMarkStaysBeforeOpenCalls(t *testing.T) {
	var r Calls
	r.Appending()
	if _, ok := r.SafeMark(); ok {
		t.Fatal("a mark while a call.allowed is being appended")
	}
	r.Allowed(10, true)
	r.Appending()
	r.Allowed(12, true)
	r.End(12, 15) // allowed 12, outcome 15
	if m, _ := r.SafeMark(); m != 9 {
		t.Fatalf("mark %d with the call allowed at 10 open, want 9", m)
	}
	r.End(10, 20)
	if m, _ := r.SafeMark(); m != 20 {
		t.Fatalf("mark %d with every call ended, want 20", m)
	}
	r.Appending()
	r.Allowed(21, true)
	r.Appending()
	r.Allowed(22, true)
	r.End(21, 30) // 22 is still open
	if m, _ := r.SafeMark(); m != 20 {
		t.Fatalf("mark %d: the call allowed at 21 ended at 30, after 22 opened; want 20", m)
	}
	r.End(22, 0) // its outcome was lost
	if m, _ := r.SafeMark(); m != 20 {
		t.Fatalf("mark %d after the outcome of 22 was lost, want 20 (before it)", m)
	}
	if got := r.Lost(); !slices.Equal(got, []int64{22}) {
		t.Fatalf("lost %v, want [22]", got)
	}
	r.End(22, 31) // recorded late
	if m, _ := r.SafeMark(); m != 31 || len(r.Lost()) != 0 {
		t.Fatalf("mark %d, lost %v once the outcome is recorded; want 31, none", m, r.Lost())
	}
}
