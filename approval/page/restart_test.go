package page

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
)

// A request cancelled because the server restarted says so on its page.
func TestRequestPageSaysARestartCancelledIt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.enroll(t, "alice", approvaltest.NewSoftKey(t, "localhost", testOrigin))
	block := f.create(t, paymentRequest("alice"))

	f.svc.Close()
	svc, err := approval.New(ctx, f.db, f.rec, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if _, err := svc.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	page := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/requests/"+block, nil)
	req.Host = "localhost:8710"
	Handler(svc, Options{Origins: f.opts.Origins}).ServeHTTP(page, req)
	if !strings.Contains(page.Body.String(), "cancelled: server restarted") {
		t.Fatalf("request page does not say it was cancelled by the restart:\n%s", page.Body.String())
	}
}
