package metrics

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/vocab"
)

// clock is the audit log's clock, moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newLog(t *testing.T, now func() time.Time) *audit.Log {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Connect(context.Background(), filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := audit.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(context.Background(), db.DB, key, audit.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Counts come from what a real audit log accepted: a call's outcome is the
// entry that ends it, an approval's wait runs from its request entry to its
// decision entry, and a name the catalog does not know is one label.
func TestCountsFollowTheAuditLog(t *testing.T) {
	clk := &clock{now: time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)}
	m := New(Options{KnownTool: func(name string) bool { return name == "transfer" || name == "get_balance" }})
	rec := m.Recorder(newLog(t, clk.Now))
	ctx := context.Background()
	appendAll := func(entries ...audit.Entry) {
		t.Helper()
		for _, e := range entries {
			if _, err := rec.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendAll(
		audit.Entry{Kind: vocab.KindCallAllowed, Tool: "get_balance", Agent: "a"},
		audit.Entry{Kind: vocab.KindCallExecuted, Tool: "get_balance", Agent: "a"},
		audit.Entry{Kind: vocab.KindCallInterrupted, Tool: "get_balance", Agent: "a"},
		audit.Entry{Kind: vocab.KindCallRejected, Tool: "launch_missiles", Agent: "a", Reason: "unknown tool"},
		audit.Entry{Kind: vocab.KindCallRejected, Tool: "drop_tables", Agent: "a", Reason: "unknown tool"},
		audit.Entry{Kind: vocab.KindApprovalRequested, Tool: "transfer", Agent: "a", RequestID: "r1"},
	)
	clk.add(42 * time.Second)
	appendAll(audit.Entry{Kind: vocab.KindApprovalDenied, Tool: "transfer", Agent: "a", RequestID: "r1", Approver: "bob"})

	text := exposition(t, m)
	for series, want := range map[string]float64{
		`countersign_tool_calls_total{outcome="executed",tool="get_balance"}`:     1,
		`countersign_tool_calls_total{outcome="interrupted",tool="get_balance"}`:  1,
		`countersign_tool_calls_total{outcome="rejected",tool="(unknown)"}`:       2,
		`countersign_tool_calls_total{outcome="approval_denied",tool="transfer"}`: 1,
		`countersign_approval_requests_total{state="requested"}`:                  1,
		`countersign_approval_requests_total{state="denied"}`:                     1,
		`countersign_audit_appends_total{kind="call.rejected"}`:                   2,
		`countersign_audit_append_errors_total`:                                   0,
		`countersign_audit_queue_depth`:                                           0,
		`countersign_approval_wait_seconds_sum{state="denied"}`:                   42,
		`countersign_approval_wait_seconds_bucket{state="denied",le="30"}`:        0,
		`countersign_approval_wait_seconds_bucket{state="denied",le="60"}`:        1,
	} {
		if line := series + " " + strconv.FormatFloat(want, 'g', -1, 64) + "\n"; !strings.Contains(text, line) {
			t.Errorf("want %s", line)
		}
	}
	if strings.Contains(text, "launch_missiles") {
		t.Error("an agent's tool name became a label")
	}
	if len(m.requested) != 0 {
		t.Errorf("decided requests still remembered: %v", m.requested)
	}

	// An append the log refuses is counted as an error, and nothing else.
	if _, err := rec.Append(ctx, audit.Entry{}); err == nil {
		t.Fatal("an entry without a kind was accepted")
	}
	if text := exposition(t, m); !strings.Contains(text, "countersign_audit_append_errors_total 1\n") {
		t.Error("the refused append is not counted")
	}
}

// exposition is what a scrape of m returns.
func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

func TestNotificationOutcomesAreCounted(t *testing.T) {
	m := New(Options{})
	m.Notified("webhook", "retry")
	m.Notified("webhook", "retry")
	m.Notified("webhook", "sent")
	m.Notified("ntfy", "failed")
	text := exposition(t, m)
	for _, want := range []string{
		`countersign_notifications_total{channel="webhook",outcome="retry"} 2`,
		`countersign_notifications_total{channel="webhook",outcome="sent"} 1`,
		`countersign_notifications_total{channel="ntfy",outcome="failed"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s", want)
		}
	}
}
