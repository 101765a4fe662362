package feed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
)

// MarkName is the store mark that holds the seq of the last entry the
// OTLP endpoint acknowledged.
const MarkName = "audit.export.otlp"

// Options configure an Exporter (config's audit.export).
type Options struct {
	Endpoint  string            // full URL, e.g. http://collector:4318/v1/logs
	Headers   map[string]string // sent with every request (API keys)
	BatchSize int               // entries per request
	JSON      bool              // OTLP/JSON instead of OTLP/protobuf
	Timeout   time.Duration     // per request
	Poll      time.Duration     // how often to look for new entries
	Backoff   store.Backoff     // between failed requests; Within is ignored
	Logger    *slog.Logger
	Client    *http.Client // nil: one with Timeout
}

// Exporter delivers the audit log, entry after entry, as OTLP log
// records. Delivery is at least once: the mark moves only after the
// endpoint acknowledged a batch, so a crash between the two sends that
// batch again; each record's countersign.seq attribute is the key a
// receiver deduplicates on.
type Exporter struct {
	log   *audit.Log
	marks store.Marks
	opts  Options
}

// NewExporter returns an exporter of log to opts.Endpoint, keeping its
// position in db.
func NewExporter(log *audit.Log, db *store.DB, opts Options) *Exporter {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Backoff.Within = 0 // an audit feed never gives up on an entry
	return &Exporter{log: log, marks: store.Marks{DB: db}, opts: opts}
}

// Lag is how many entries the log holds past the last one delivered.
func (x *Exporter) Lag(ctx context.Context) (int64, error) { return Lag(ctx, x.log, x.marks.DB) }

// Lag is how many entries log holds past the last one delivered, as the
// mark in db says: any process sharing the database can report it.
func Lag(ctx context.Context, log *audit.Log, db *store.DB) (int64, error) {
	head, err := log.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	pos, _, err := store.Marks{DB: db}.Mark(ctx, MarkName)
	if err != nil {
		return 0, err
	}
	return max(head-pos, 0), nil
}

// Run delivers until ctx ends, starting after the stored position. It
// never gives up: a failure to read the log or the position (the
// database away) is logged and tried again after a back-off, as a
// refused request is.
func (x *Exporter) Run(ctx context.Context) {
	failures := 0
	for {
		n, err := x.deliverBatch(ctx)
		if ctx.Err() != nil {
			return
		}
		pause := x.opts.Poll
		switch {
		case err != nil:
			failures++
			pause = x.opts.Backoff.Pause(failures)
			x.opts.Logger.Warn("audit export: cannot read the next batch; trying again", "attempt", failures, "in", pause, "err", err)
		case n > 0:
			failures = 0
			continue
		default:
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
	}
}

// deliverBatch sends the next batch after the mark, retrying until the
// endpoint takes it, then moves the mark; it returns how many it sent.
func (x *Exporter) deliverBatch(ctx context.Context) (int, error) {
	pos, _, err := x.marks.Mark(ctx, MarkName)
	if err != nil {
		return 0, err
	}
	entries, err := x.log.Since(ctx, pos, x.opts.BatchSize)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	cp, err := CheckpointOf(ctx, x.log)
	if err != nil {
		return 0, err
	}
	body, err := x.encode(entries, cp)
	if err != nil {
		return 0, err
	}
	failures := 0
	err = x.opts.Backoff.Do(ctx, func(err error) bool {
		failures++
		x.opts.Logger.Warn("audit export: the OTLP endpoint did not take a batch; trying again",
			"endpoint", x.opts.Endpoint, "from_seq", entries[0].Seq, "attempt", failures, "err", err)
		return true
	}, func() error { return x.post(ctx, body) })
	if err != nil {
		return 0, err
	}
	if failures > 0 {
		x.opts.Logger.Info("audit export: the OTLP endpoint takes batches again", "endpoint", x.opts.Endpoint, "after_attempts", failures+1)
	}
	// The endpoint has the batch: record that even when a shutdown began
	// meanwhile, so the next start does not send it again.
	if err := x.marks.SetMark(context.WithoutCancel(ctx), MarkName, entries[len(entries)-1].Seq); err != nil {
		return 0, err
	}
	return len(entries), nil
}

// CheckpointOf is the log's signed checkpoint of every entry so far.
func CheckpointOf(ctx context.Context, log *audit.Log) (*Checkpoint, error) {
	msg, err := log.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	size, _ := audit.CheckpointSize(msg)
	return &Checkpoint{Size: size, Note: string(msg)}, nil
}

// encode makes the request body: LogsData, which is on the wire what
// ExportLogsServiceRequest is (field 1, repeated ResourceLogs), so the
// gRPC service stubs need not be linked. Each record's body is the
// entry's OCSF event in JSON.
func (x *Exporter) encode(entries []audit.Entry, cp *Checkpoint) ([]byte, error) {
	records := make([]*logspb.LogRecord, 0, len(entries))
	for _, e := range entries {
		ev, err := OCSF(e, cp)
		if err != nil {
			return nil, err
		}
		text, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		var ns uint64
		if t, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
			ns = uint64(t.UnixNano())
		}
		records = append(records, &logspb.LogRecord{
			TimeUnixNano:   ns,
			SeverityNumber: otelSeverity(ev.SeverityID),
			SeverityText:   ev.Severity,
			EventName:      string(e.Kind),
			Body:           &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: string(text)}},
			Attributes: []*commonpb.KeyValue{
				intAttr("countersign.seq", e.Seq),
				strAttr("countersign.hash", e.Hash),
				strAttr("countersign.kind", string(e.Kind)),
				intAttr("countersign.checkpoint.size", cp.Size),
				intAttr("ocsf.class_uid", classAPIActivity),
			},
		})
	}
	data := &logspb.LogsData{ResourceLogs: []*logspb.ResourceLogs{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", "countersign")}},
		ScopeLogs: []*logspb.ScopeLogs{{
			Scope:      &commonpb.InstrumentationScope{Name: "github.com/countersign/countersign/audit/feed"},
			LogRecords: records,
		}},
	}}}
	if x.opts.JSON {
		return protojson.Marshal(data)
	}
	return proto.Marshal(data)
}

// post sends one request; any answer but 2xx is an error to retry.
func (x *Exporter) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.opts.Endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if x.opts.JSON {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range x.opts.Headers {
		req.Header.Set(k, v)
	}
	resp, err := x.opts.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// otelSeverity maps OCSF severity to OpenTelemetry's SeverityNumber.
func otelSeverity(ocsf int) logspb.SeverityNumber {
	switch ocsf {
	case severityHigh:
		return logspb.SeverityNumber_SEVERITY_NUMBER_ERROR
	case severityMedium:
		return logspb.SeverityNumber_SEVERITY_NUMBER_WARN
	}
	return logspb.SeverityNumber_SEVERITY_NUMBER_INFO
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

func intAttr(k string, v int64) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
}
