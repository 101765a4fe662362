package watch

import (
	"slices"
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A waiter on one request wakes at its change and not at another's; a
// change of no request in particular wakes every waiter; hooks hear every
// change; a forgotten request leaves no channel behind.
func TestWaitersWakeAtTheirOwnChange(t *testing.T) {
	h := New()
	var heard []string
	h.OnChange(func(id string) { heard = append(heard, id) })
	a, b, any := h.Of("a"), h.Of("b"), h.Any()
	if h.Watched() != 2 {
		t.Fatalf("watched %d, want 2", h.Watched())
	}
	h.Notify("a")
	if !closed(a) || closed(b) || !closed(any) {
		t.Fatalf("after a changed: a %v, b %v, any %v", closed(a), closed(b), closed(any))
	}
	if closed(h.Any()) || closed(h.Of("a")) {
		t.Fatal("the next channels are closed before the next change")
	}
	h.Notify()
	if !closed(b) {
		t.Fatal("a change of no request in particular did not wake b")
	}
	c := h.Of("c")
	h.Forget("c")
	if !closed(c) || h.Watched() != 0 {
		t.Fatalf("after Forget: c closed %v, %d watched", closed(c), h.Watched())
	}
	if want := []string{"a", ""}; !slices.Equal(heard, want) {
		t.Fatalf("hooks heard %q, want %q", heard, want)
	}
}
