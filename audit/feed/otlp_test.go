package feed_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/auditpg"
	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/audit/feed/feedtest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// testLog is a real audit log in a SQLite file.
type testLog struct {
	db  *store.DB
	log *audit.Log
}

func newTestLog(t *testing.T) *testLog {
	t.Helper()
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	_, key, _ := ed25519.GenerateKey(nil)
	l, err := auditpg.Open(context.Background(), db, key, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &testLog{db: db, log: l}
}

// appendCalls appends n call.allowed entries.
func (tl *testLog) appendCalls(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		_, err := tl.log.Append(context.Background(), audit.Entry{
			Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "get_balance", Decision: "low",
			Args: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func options(r *feedtest.Receiver, logger *slog.Logger) feed.Options {
	return feed.Options{
		Endpoint:  r.URL(),
		Headers:   map[string]string{"Authorization": "Bearer siem-token"},
		BatchSize: 7,
		Timeout:   5 * time.Second,
		Poll:      10 * time.Millisecond,
		Backoff:   store.Backoff{First: 5 * time.Millisecond, Max: 40 * time.Millisecond},
		Logger:    logger,
	}
}

// running runs an exporter until the returned stop is called.
func running(t *testing.T, x *feed.Exporter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { x.Run(ctx) })
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestExporterDeliversEveryEntryInOrder(t *testing.T) {
	for _, enc := range []string{"protobuf", "json"} {
		t.Run(enc, func(t *testing.T) {
			tl := newTestLog(t)
			tl.appendCalls(t, 30)
			r := feedtest.NewReceiver(t)
			opts := options(r, nil)
			opts.JSON = enc == "json"
			x := feed.NewExporter(tl.log, tl.db, opts)
			if lag, err := x.Lag(context.Background()); err != nil || lag != 30 {
				t.Fatalf("Lag before delivery = %d, %v; want 30", lag, err)
			}
			running(t, x)
			r.WaitDistinct(30)
			tl.appendCalls(t, 5) // found by polling
			r.WaitDistinct(35)

			if got := r.Seqs(); !slices.Equal(got, feedtest.UpTo(35)) {
				t.Fatalf("received seqs %v, want 1..35 once each, in order", got)
			}
			if got := r.Header("Authorization"); got != "Bearer siem-token" {
				t.Errorf("Authorization header = %q", got)
			}
			rec := r.Record(34)
			ev := feedtest.Event(t, rec)
			entries, err := tl.log.Since(context.Background(), 34, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ev.ClassUID != 6003 || ev.Metadata.Sequence != 35 || ev.Unmapped.Countersign.Hash != entries[0].Hash {
				t.Errorf("record 35's event: class %d, sequence %d, hash %s; want 6003, 35, %s",
					ev.ClassUID, ev.Metadata.Sequence, ev.Unmapped.Countersign.Hash, entries[0].Hash)
			}
			if cp := ev.Unmapped.Countersign.Checkpoint; cp == nil || cp.Size < 35 {
				t.Errorf("record 35's checkpoint %+v does not cover it", cp)
			}
			if got := feedtest.Attr(rec, "countersign.hash").GetStringValue(); got != entries[0].Hash {
				t.Errorf("countersign.hash = %q, want %q", got, entries[0].Hash)
			}
			if rec.TimeUnixNano == 0 || rec.EventName != string(vocab.KindCallAllowed) {
				t.Errorf("record time %d, event name %q", rec.TimeUnixNano, rec.EventName)
			}
			waitLag(t, x, 0)
		})
	}
}

// waitLag waits until the exporter's lag is want (the mark moves just
// after the receiver answers).
func waitLag(t *testing.T, x *feed.Exporter, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lag, err := x.Lag(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if lag == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %d, want %d", lag, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExporterResumesAcrossRestarts stops Countersign's exporter, then
// the collector, appends meanwhile, and starts both again: every seq
// arrives, in order, and none twice.
func TestExporterResumesAcrossRestarts(t *testing.T) {
	tl := newTestLog(t)
	r := feedtest.NewReceiver(t)
	tl.appendCalls(t, 20)

	first := feed.NewExporter(tl.log, tl.db, options(r, nil))
	stop := running(t, first)
	r.WaitDistinct(20)
	waitLag(t, first, 0) // acknowledged and recorded: a stop now sends nothing twice
	stop()               // Countersign stops
	tl.appendCalls(t, 10)

	r.Stop() // the collector goes down too
	var logs syncBuffer
	x := feed.NewExporter(tl.log, tl.db, options(r, slog.New(slog.NewTextHandler(&logs, nil))))
	running(t, x) // Countersign starts: the collector is away
	tl.appendCalls(t, 10)
	waitLogged(t, &logs, "did not take a batch")
	r.Start() // the collector is back on the same address
	r.WaitDistinct(40)
	waitLag(t, x, 0)

	if got := r.Seqs(); !slices.Equal(got, feedtest.UpTo(40)) {
		t.Fatalf("received seqs %v, want 1..40 once each, in order", got)
	}
}

// TestExporterBacksOffAndLogsEachStep has the collector refuse three
// requests: each refusal is one warning, the recovery one line, and
// nothing is lost or sent twice.
func TestExporterBacksOffAndLogsEachStep(t *testing.T) {
	tl := newTestLog(t)
	tl.appendCalls(t, 3)
	r := feedtest.NewReceiver(t)
	r.Refuse(3)
	var logs syncBuffer
	x := feed.NewExporter(tl.log, tl.db, options(r, slog.New(slog.NewTextHandler(&logs, nil))))
	running(t, x)
	r.WaitDistinct(3)
	waitLag(t, x, 0)
	out := logs.String()
	if n := strings.Count(out, "did not take a batch"); n != 3 {
		t.Errorf("%d warnings for 3 refusals:\n%s", n, out)
	}
	if !strings.Contains(out, "503 Service Unavailable: collector busy") || strings.Count(out, "takes batches again") != 1 {
		t.Errorf("the log does not say why nor that delivery recovered:\n%s", out)
	}
	if got := r.Seqs(); !slices.Equal(got, feedtest.UpTo(3)) {
		t.Fatalf("received %v, want 1..3", got)
	}
}

// syncBuffer is a log destination the exporter writes while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLogged waits until the log says what.
func waitLogged(t *testing.T, logs *syncBuffer, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("the log never said %q:\n%s", what, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExporterOutlastsAnUnreadableLog: while the log cannot be read
// (here its table renamed away) the exporter warns once per back-off
// step and keeps trying; when the log is back it delivers everything.
func TestExporterOutlastsAnUnreadableLog(t *testing.T) {
	tl := newTestLog(t)
	tl.appendCalls(t, 3)
	if _, err := tl.db.Exec(`ALTER TABLE audit_entries RENAME TO audit_entries_away`); err != nil {
		t.Fatal(err)
	}
	r := feedtest.NewReceiver(t)
	var logs syncBuffer
	running(t, feed.NewExporter(tl.log, tl.db, options(r, slog.New(slog.NewTextHandler(&logs, nil)))))
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(logs.String(), "cannot read the next batch") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no second warning:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tl.db.Exec(`ALTER TABLE audit_entries_away RENAME TO audit_entries`); err != nil {
		t.Fatal(err)
	}
	r.WaitDistinct(3)
	if got := r.Seqs(); !slices.Equal(got, feedtest.UpTo(3)) {
		t.Fatalf("received %v, want 1..3", got)
	}
}
