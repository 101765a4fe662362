package feed_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/audit/feed"
)

// receiver is an OTLP/HTTP logs endpoint built from the OTLP protobuf
// definitions: it decodes each request as the collector's otlpreceiver
// does (ExportLogsServiceRequest has LogsData's wire form), keeps every
// record in arrival order, and can refuse requests or go down and come
// back on the same address.
type receiver struct {
	t    *testing.T
	addr string
	srv  *http.Server

	mu       sync.Mutex
	records  []*logspb.LogRecord
	refuse   int // the next requests to answer 503
	headers  http.Header
	requests int
	arrived  chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, addr: "127.0.0.1:0", arrived: make(chan struct{}, 1000)}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/v1/logs" }

// start listens on the receiver's address (a fresh port the first time).
func (r *receiver) start() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go r.srv.Serve(ln)
}

func (r *receiver) stop() {
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
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
	r.arrived <- struct{}{}
}

// seqs are the countersign.seq attributes of every record received, in
// order, duplicates included.
func (r *receiver) seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.records {
		out = append(out, seqOf(r.t, rec))
	}
	return out
}

func seqOf(t *testing.T, rec *logspb.LogRecord) int64 {
	for _, kv := range rec.Attributes {
		if kv.Key == "countersign.seq" {
			return kv.Value.GetIntValue()
		}
	}
	t.Fatalf("record without countersign.seq: %v", rec)
	return 0
}

func attr(rec *logspb.LogRecord, key string) *commonpb.AnyValue {
	for _, kv := range rec.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// event decodes a record's body as the OCSF event it carries.
func event(t *testing.T, rec *logspb.LogRecord) feed.Event {
	var ev feed.Event
	dec := json.NewDecoder(strings.NewReader(rec.Body.GetStringValue()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("record body is not an OCSF event: %v", err)
	}
	return ev
}
