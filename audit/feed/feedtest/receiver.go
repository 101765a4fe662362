// Package feedtest is the receiving end of the audit feed's tests: an
// OTLP/HTTP logs endpoint on 127.0.0.1 built from the OTLP protobuf
// definitions.
package feedtest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/audit/feed"
)

// Receiver is an OTLP/HTTP logs endpoint built from the OTLP protobuf
// definitions: it decodes each request as the collector's otlpreceiver
// does (ExportLogsServiceRequest has LogsData's wire form), keeps every
// record in arrival order, and can refuse requests or go down and come
// back on the same address.
type Receiver struct {
	t    *testing.T
	addr string
	srv  *http.Server

	mu       sync.Mutex
	records  []*logspb.LogRecord
	refuse   int         // the next requests to answer 503
	headers  http.Header // of the last request
	requests int
}

// NewReceiver listens on a fresh port until the test ends.
func NewReceiver(t *testing.T) *Receiver {
	r := &Receiver{t: t, addr: "127.0.0.1:0"}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// URL is the logs endpoint.
func (r *Receiver) URL() string { return "http://" + r.addr + "/v1/logs" }

// Start listens on the receiver's address again (a collector back).
func (r *Receiver) Start() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go r.srv.Serve(ln)
}

// Stop closes the listener and every connection (a collector down).
func (r *Receiver) Stop() {
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	r.headers = req.Header.Clone()
	if r.refuse > 0 {
		r.refuse--
		http.Error(w, "collector busy", http.StatusServiceUnavailable)
		return
	}
	var data logspb.LogsData
	switch req.Header.Get("Content-Type") {
	case "application/x-protobuf":
		err = proto.Unmarshal(body, &data)
	case "application/json":
		err = protojson.Unmarshal(body, &data)
	default:
		http.Error(w, "unsupported content type", http.StatusUnsupportedMediaType)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rl := range data.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			r.records = append(r.records, sl.LogRecords...)
		}
	}
	w.Header().Set("Content-Type", req.Header.Get("Content-Type"))
	w.Write(nil) // an empty ExportLogsServiceResponse: full success
}

// Seqs are the countersign.seq attributes of every record received, in
// order, duplicates included.
func (r *Receiver) Seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.records {
		out = append(out, SeqOf(r.t, rec))
	}
	return out
}

// SeqOf is a record's countersign.seq.
func SeqOf(t *testing.T, rec *logspb.LogRecord) int64 {
	for _, kv := range rec.Attributes {
		if kv.Key == "countersign.seq" {
			return kv.Value.GetIntValue()
		}
	}
	t.Fatalf("record without countersign.seq: %v", rec)
	return 0
}

// Attr is a record's attribute key, nil when it has none.
func Attr(rec *logspb.LogRecord, key string) *commonpb.AnyValue {
	for _, kv := range rec.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// Event decodes a record's body as the OCSF event it carries.
func Event(t *testing.T, rec *logspb.LogRecord) feed.Event {
	var ev feed.Event
	dec := json.NewDecoder(strings.NewReader(rec.Body.GetStringValue()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("record body is not an OCSF event: %v", err)
	}
	return ev
}

// Refuse has the next n requests answered 503.
func (r *Receiver) Refuse(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = n
}

// Header is a header of the last request.
func (r *Receiver) Header(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers.Get(name)
}

// Record is the ith record received.
func (r *Receiver) Record(i int) *logspb.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records[i]
}

// WaitDistinct waits until the receiver holds every seq 1..n.
func (r *Receiver) WaitDistinct(n int) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a bound for a stuck test, not a speed claim
	for len(Distinct(r.Seqs())) < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("the receiver holds %v, want every seq up to %d", Distinct(r.Seqs()), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Distinct is seqs without repeats, in order of first arrival.
func Distinct(seqs []int64) []int64 {
	seen := map[int64]bool{}
	var out []int64
	for _, s := range seqs {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// UpTo is 1..n.
func UpTo(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}
