package upstreamtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Events of a [Record].
const (
	EventCalled    = "called"    // a tool handler was invoked
	EventCancelled = "cancelled" // slow saw its context cancelled and stopped; stubborn saw it and carried on
	EventCompleted = "completed" // slow ran all its steps; stubborn wrote its note
)

// Record is one line of the record file.
type Record struct {
	Tool string `json:"tool"`
	// Arguments are the call's arguments as the client sent them (before
	// schema defaults were applied); {} if it sent none.
	Arguments map[string]any `json:"arguments"`
	// Meta is the request's _meta, if it had one (under protocol 2026-07-28
	// the go-sdk client puts its protocol version, client info and
	// capabilities there too).
	Meta  map[string]any `json:"meta,omitempty"`
	Event string         `json:"event"`
	// Time is when the line was written; it is encoded as RFC 3339 with
	// nanoseconds.
	Time time.Time `json:"time"`
}

// recordLine is how a Record is written: the arguments verbatim.
type recordLine struct {
	Tool      string          `json:"tool"`
	Arguments json.RawMessage `json:"arguments"`
	Meta      map[string]any  `json:"meta,omitempty"`
	Event     string          `json:"event"`
	Time      time.Time       `json:"time"`
}

// appendRecord appends one line to path with a single write to a file
// opened with O_APPEND, which keeps lines whole when goroutines or
// processes append at once. It does nothing if path is empty.
func appendRecord(path, tool string, args json.RawMessage, meta map[string]any, event string) error {
	if path == "" {
		return nil
	}
	if len(bytes.TrimSpace(args)) == 0 || bytes.Equal(bytes.TrimSpace(args), []byte("null")) {
		args = json.RawMessage("{}")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, args); err != nil {
		return fmt.Errorf("record: arguments: %w", err)
	}
	if len(meta) == 0 {
		meta = nil
	}
	line, err := json.Marshal(recordLine{
		Tool:      tool,
		Arguments: compact.Bytes(),
		Meta:      meta,
		Event:     event,
		Time:      time.Now().UTC(),
	})
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	line = append(line, '\n')
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	_, werr := f.Write(line)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// ReadRecord returns the records in the file at path, oldest first. A file
// that does not exist holds no records (nil, nil): a server that was never
// called has not created it.
func ReadRecord(path string) ([]Record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, len(data)+1)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return recs, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}
