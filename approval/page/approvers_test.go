package page

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
)

// The request page and the batch page list who can approve now (an
// enrolled, unrevoked key) apart from those who must enroll a key first;
// a revoked key moves its approver back to the second list.
func TestPageListsWhoCanApproveNowApartFromWhoMustEnroll(t *testing.T) {
	h := newHTTPFixture(t)
	alice := approvaltest.NewSoftKey(t, "localhost", h.base)
	h.enroll(t, "alice", alice)
	id := h.create(t, batchRequest(1, "alice", "bob", "carol"))
	page := func(path string) string {
		t.Helper()
		resp, err := h.client.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d\n%s", path, resp.StatusCode, body)
		}
		return string(body)
	}
	for _, path := range []string{"/requests/" + id, "/batch?id=" + id} {
		body := page(path)
		for _, want := range []string{
			`>Can approve now (security key enrolled): Alice Example</li>`,
			`>Must enroll a security key before they can approve: Bob Example, Carol Example</li>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", path, want)
			}
		}
		if strings.Contains(body, "May approve") {
			t.Errorf("%s still lists everyone as able to approve", path)
		}
	}

	keys, err := h.svc.Credentials(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	if err := h.svc.RevokeCredential(context.Background(), keys[0].ID, "lost"); err != nil {
		t.Fatal(err)
	}
	body := page("/requests/" + id)
	for _, want := range []string{
		`id="can-approve">Can approve now (security key enrolled): nobody yet</li>`,
		`id="must-enroll">Must enroll a security key before they can approve: Alice Example, Bob Example, Carol Example</li>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("after the revocation the page lacks %s", want)
		}
	}
}
