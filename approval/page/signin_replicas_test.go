package page

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
)

// A session begun on replica A's page is honoured by replica B's, which
// shares A's database and nothing else; a made-up cookie is refused by
// both, and without Options.Sessions B knows nothing of A's session.
func TestSignInOnOneReplicaIsHonouredByAnother(t *testing.T) {
	storetest.Replicas(t, func(t *testing.T, a, b *store.DB) {
		ctx := context.Background()
		kept := func(db *store.DB) *store.SignInSessions {
			ss, err := store.OpenSignInSessions(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			return ss
		}
		p := newTLSPage(t, func(o *Options) { o.Sessions = kept(a) })
		alice := approvaltest.NewSoftKey(t, "localhost", p.base)
		p.enroll(t, "alice", alice)
		req, err := p.svc.Create(ctx, paymentRequest("alice"))
		if err != nil {
			t.Fatal(err)
		}
		code, c := p.signIn(t, alice)
		if code != http.StatusOK || c == nil {
			t.Fatalf("alice's sign-in on A: %d", code)
		}
		host := strings.TrimPrefix(p.base, "https://")
		replicaB := func(sessions Sessions) http.Handler {
			return Handler(p.svc, Options{Origins: []string{p.base}, PublicURL: p.base, RequireSignIn: true,
				AllowedHosts: []string{host}, Sessions: sessions})
		}
		get := func(h http.Handler, cookie *http.Cookie) (int, string) {
			r := httptest.NewRequest(http.MethodGet, p.base+"/api/requests/"+req.ID, nil)
			r.AddCookie(cookie)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w.Code, w.Body.String()
		}
		onB := replicaB(kept(b))
		if code, body := get(onB, c); code != http.StatusOK || !strings.Contains(body, req.ID) {
			t.Fatalf("A's session on B: %d %s", code, body)
		}
		if code, _ := get(onB, &http.Cookie{Name: sessionCookie, Value: strings.Repeat("A", 43)}); code != http.StatusUnauthorized {
			t.Fatalf("made-up session on B: %d", code)
		}
		if code, _ := get(replicaB(nil), c); code != http.StatusUnauthorized {
			t.Fatalf("A's session on a B that keeps sessions in memory: %d, want 401", code)
		}
	})
}
