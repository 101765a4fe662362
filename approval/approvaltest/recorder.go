package approvaltest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// Recorder is an audit log in memory, for a service under test: it numbers
// entries as the log does, and SetFail makes Append fail as a full disk
// would.
type Recorder struct {
	mu      sync.Mutex
	entries []audit.Entry
	fail    bool
}

// Append records e, numbered, or fails when SetFail(true).
func (m *Recorder) Append(_ context.Context, e audit.Entry) (audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return audit.Entry{}, errors.New("disk full")
	}
	e.Seq = int64(len(m.entries) + 1)
	if e.Time == "" {
		e.Time = time.Now().UTC().Format(time.RFC3339Nano)
	}
	m.entries = append(m.entries, e)
	return e, nil
}

// SetFail makes every Append fail (true) or succeed again (false).
func (m *Recorder) SetFail(v bool) { m.mu.Lock(); m.fail = v; m.mu.Unlock() }

// LastSeq is the number of the last entry.
func (m *Recorder) LastSeq(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.entries)), nil
}

// Since returns up to limit entries after seq.
func (m *Recorder) Since(_ context.Context, seq int64, limit int) ([]audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.entries[min(seq, int64(len(m.entries))):]
	return append([]audit.Entry(nil), out[:min(limit, len(out))]...), nil
}

// Entries returns a copy of every entry, in order.
func (m *Recorder) Entries() []audit.Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]audit.Entry(nil), m.entries...)
}

// Kinds lists the kinds of the entries of requestID ("": of all), in order.
func (m *Recorder) Kinds(requestID string) []vocab.Kind {
	var out []vocab.Kind
	for _, e := range m.Entries() {
		if requestID == "" || e.RequestID == requestID {
			out = append(out, e.Kind)
		}
	}
	return out
}

// Last returns the newest entry of kind.
func (m *Recorder) Last(kind vocab.Kind) (audit.Entry, bool) {
	es := m.Entries()
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Kind == kind {
			return es[i], true
		}
	}
	return audit.Entry{}, false
}

// RequireRejected fails t unless the newest approval.rejected entry names
// check (a CheckError's Check).
func (m *Recorder) RequireRejected(t testing.TB, check string) {
	t.Helper()
	e, ok := m.Last(vocab.KindApprovalRejected)
	if !ok {
		t.Fatalf("no approval.rejected entry; kinds %v", m.Kinds(""))
	}
	if !strings.HasPrefix(e.Reason, check) {
		t.Fatalf("rejected reason %q, want check %q", e.Reason, check)
	}
}
