package upstream_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
)

// stubbornUpstream serves the test upstream with its hostile tool over
// Streamable HTTP, its calls bounded by callTimeout.
func stubbornUpstream(t *testing.T, callTimeout time.Duration) (*httptest.Server, *tools.Catalog, string) {
	t.Helper()
	record := t.TempDir() + "/record.jsonl"
	srv := httptest.NewServer(upstreamtest.Handler(upstreamtest.Options{RecordPath: record, Stubborn: true}))
	t.Cleanup(srv.Close)
	_, cat := start(t, config.Upstream{Name: "hostile", Prefix: "hostile__", URL: srv.URL,
		ConnectTimeout: 10 * time.Second, CallTimeout: callTimeout})
	return srv, cat, record
}

// waitEvent waits until the upstream recorded event for tool.
func waitEvent(t *testing.T, record, tool, event string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _ := upstreamtest.ReadRecord(record)
		for _, r := range recs {
			if r.Tool == tool && r.Event == event {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream never recorded %s %s: %+v", tool, event, recs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCallErrorsSayWhetherTheUpstreamMayHaveActed(t *testing.T) {
	t.Run("an answer past call_timeout is an unknown outcome", func(t *testing.T) {
		_, cat, record := stubbornUpstream(t, 200*time.Millisecond)
		_, err := run(t, context.Background(), cat, "hostile__stubborn", map[string]any{"name": "n", "text": "t", "ms": 1000})
		if !tools.OutcomeUnknown(err) || !strings.Contains(err.Error(), "no answer within call_timeout 200ms") {
			t.Fatalf("error %v, want an unknown outcome after call_timeout", err)
		}
		// And the upstream did act: why the outcome is unknown, not failed.
		waitEvent(t, record, upstreamtest.Stubborn, upstreamtest.EventCompleted)
	})
	t.Run("a cancelled call is an unknown outcome", func(t *testing.T) {
		_, cat, record := stubbornUpstream(t, time.Minute)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { waitEvent(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled); cancel() }()
		_, err := run(t, ctx, cat, "hostile__stubborn", map[string]any{"name": "n", "text": "t", "ms": 500})
		if !tools.OutcomeUnknown(err) {
			t.Fatalf("error %v, want an unknown outcome", err)
		}
		waitEvent(t, record, upstreamtest.Stubborn, upstreamtest.EventCompleted)
	})
	t.Run("a connection dropped mid-call is an unknown outcome", func(t *testing.T) {
		srv, cat, record := stubbornUpstream(t, time.Minute)
		go func() {
			waitEvent(t, record, upstreamtest.Stubborn, upstreamtest.EventCalled)
			srv.CloseClientConnections()
		}()
		_, err := run(t, context.Background(), cat, "hostile__stubborn", map[string]any{"name": "n", "text": "t", "ms": 2000})
		if !tools.OutcomeUnknown(err) {
			t.Fatalf("error %v, want an unknown outcome", err)
		}
	})
	t.Run("the upstream's JSON-RPC error is its answer", func(t *testing.T) {
		_, cat, _ := stubbornUpstream(t, time.Minute)
		_, err := run(t, context.Background(), cat, "hostile__stubborn", map[string]any{"name": "n", "text": "refuse"})
		if err == nil || tools.OutcomeUnknown(err) || tools.NotSent(err) {
			t.Fatalf("error %v, want the upstream's own error", err)
		}
	})
	t.Run("a call to an upstream that is down is not sent", func(t *testing.T) {
		srv, cat, _ := stubbornUpstream(t, time.Minute)
		srv.CloseClientConnections()
		srv.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := run(t, context.Background(), cat, "hostile__read_note", map[string]any{"name": "x"})
			if tools.NotSent(err) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("last error %v, want not sent", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
