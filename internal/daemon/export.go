package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/store"
)

// exportAudit delivers the audit log to audit.export's OTLP endpoint
// until ctx ends: one of the leader's duties, so replicas on PostgreSQL
// send each entry once (at least once across a change of leader: the
// position is the database's, and the seq is the receiver's key).
func (s *Stack) exportAudit(ctx context.Context, c *config.Config, log *slog.Logger) {
	x := c.Audit.Export
	if x.Endpoint == "" {
		return
	}
	log = log.With("component", "audit-export")
	log.Info("exporting the audit log", "endpoint", x.Endpoint, "encoding", x.Encoding)
	exp := feed.NewExporter(s.audit, s.db, feed.Options{
		Endpoint:  x.Endpoint,
		Headers:   x.Headers,
		BatchSize: x.BatchSize,
		JSON:      x.Encoding == "json",
		Timeout:   x.Timeout,
		Poll:      x.Interval,
		Backoff:   store.Backoff{First: min(time.Second, x.RetryMax), Max: x.RetryMax},
		Logger:    log,
	})
	exp.Run(ctx)
}

// exportLag is the metrics' view of the export; nil without one.
func (s *Stack) exportLag() func(context.Context) (int64, error) {
	if s.cfg == nil || s.cfg.Audit.Export.Endpoint == "" {
		return nil
	}
	return func(ctx context.Context) (int64, error) { return feed.Lag(ctx, s.audit, s.db) }
}
