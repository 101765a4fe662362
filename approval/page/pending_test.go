package page

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// The page lists the pendingShown requests that expire soonest and says
// when more are waiting, rather than silently showing fewer than there are.
func TestPageSaysWhenMoreArePendingThanListed(t *testing.T) {
	h := newHTTPFixture(t)
	get := func(path string) string {
		t.Helper()
		resp, err := h.client.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for i := range pendingShown {
		if _, err := h.svc.Create(context.Background(), paymentRequest("alice")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if page := get("/"); !strings.Contains(page, `id="pending-more" class="note" hidden`) {
		t.Errorf("with exactly %d pending the note shows:\n%s", pendingShown, page)
	}
	if _, err := h.svc.Create(context.Background(), paymentRequest("alice")); err != nil {
		t.Fatal(err)
	}
	n, err := h.svc.PendingCount(context.Background())
	if err != nil || n != pendingShown+1 {
		t.Fatalf("PendingCount = %d, %v", n, err)
	}
	page := get("/")
	if !strings.Contains(page, `<p id="pending-more" class="note">Showing the 100 that expire soonest of <span id="pending-total">101</span> waiting`) {
		t.Errorf("page does not say 100 of 101:\n%s", page)
	}
	var list struct {
		Pending      []json.RawMessage `json:"pending"`
		PendingTotal int               `json:"pendingTotal"`
	}
	if err := json.Unmarshal([]byte(get("/api/requests")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Pending) != pendingShown || list.PendingTotal != pendingShown+1 {
		t.Errorf("api lists %d of %d", len(list.Pending), list.PendingTotal)
	}
}
