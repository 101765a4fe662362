package upstream_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
)

// seen is a real HTTP server on 127.0.0.1 that serves a working MCP
// upstream and records the Authorization header of every request it gets.
type seen struct {
	*httptest.Server
	mu   sync.Mutex
	auth []string
}

func newSeen(t *testing.T, then http.Handler) *seen {
	t.Helper()
	s := &seen{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		then.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *seen) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

const testToken = "Bearer s3cret-for-the-upstream-only"

func startWithToken(u config.Upstream) (*upstream.Manager, *tools.Catalog, error) {
	u.Headers = map[string]string{"Authorization": "${UPSTREAM_TEST_TOKEN}"}
	u.ConnectTimeout = 10 * time.Second
	u.Required = true
	cat := tools.NewCatalog()
	m, err := upstream.Start(context.Background(), []config.Upstream{u}, cat, upstream.Options{
		Getenv: func(k string) string {
			if k == "UPSTREAM_TEST_TOKEN" {
				return testToken
			}
			return ""
		},
	})
	return m, cat, err
}

// Issue 22, row 5: an HTTP upstream that answers 307 to another host does
// not get its configured Authorization header sent there. The redirect is
// refused, naming the upstream and the origin it pointed to, and the other
// host hears nothing at all.
func TestRedirectToAnotherOriginIsRefusedAndKeepsTheHeaders(t *testing.T) {
	other := newSeen(t, upstreamtest.Handler(upstreamtest.Options{}))
	redirector := newSeen(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/mcp", http.StatusTemporaryRedirect)
	}))
	m, _, err := startWithToken(config.Upstream{Name: "moved", Prefix: "moved__", URL: redirector.URL + "/mcp"})
	if err == nil {
		m.Close()
		t.Fatal("connected through a redirect to another origin")
	}
	for _, want := range []string{"upstream moved", "refusing the redirect to " + other.URL, "headers are never sent elsewhere"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("the other origin received %d requests, Authorization %q", len(got), got)
	}
	if got := redirector.requests(); len(got) == 0 || got[0] != testToken {
		t.Errorf("the upstream itself got Authorization %q, want its token", got)
	}
}

// A redirect within the upstream's own origin keeps working, with the
// headers.
func TestRedirectWithinTheOriginKeepsWorking(t *testing.T) {
	h := upstreamtest.Handler(upstreamtest.Options{})
	srv := newSeen(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/mcp", http.StatusTemporaryRedirect)
			return
		}
		h.ServeHTTP(w, r)
	}))
	m, cat, err := startWithToken(config.Upstream{Name: "web", Prefix: "web__", URL: srv.URL + "/old"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := run(t, context.Background(), cat, "web__read_note", map[string]any{"name": "x"})
	if err != nil || !strings.HasPrefix(textOf(res), "note x") {
		t.Fatalf("%v %+v", err, res)
	}
	for _, a := range srv.requests() {
		if a != testToken {
			t.Fatalf("Authorization %q on a same-origin request", a)
		}
	}
}

// Over SSE the upstream names the URL the client posts to; naming another
// host there must not carry the headers either.
func TestSSEEndpointOnAnotherOriginIsRefused(t *testing.T) {
	other := newSeen(t, http.NotFoundHandler())
	sse := newSeen(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "no streamable HTTP here", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: endpoint\ndata: %s/messages?sessionid=1\n\n", other.URL)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	m, _, err := startWithToken(config.Upstream{Name: "legacy", Prefix: "legacy__", URL: sse.URL + "/sse"})
	if err == nil {
		m.Close()
		t.Fatal("connected through an SSE endpoint on another origin")
	}
	u, _ := url.Parse(other.URL)
	if !strings.Contains(err.Error(), "refusing a request to http://"+u.Host) {
		t.Errorf("error does not name the other origin:\n%v", err)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("the other origin received %d requests, Authorization %q", len(got), got)
	}
}
