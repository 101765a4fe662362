package config

import (
	"net/url"
	"time"

	"golang.org/x/net/http/httpguts"
)

// AuditExport is audit.export: an OpenTelemetry logs endpoint (OTLP over
// HTTP) that receives every audit entry as a log record, from where
// delivery last stopped (package audit/feed). On PostgreSQL only the
// replica that leads exports.
type AuditExport struct {
	// Endpoint is the OTLP/HTTP logs URL, e.g.
	// http://collector:4318/v1/logs; empty: no export.
	Endpoint string `mapstructure:"endpoint"`
	// Headers are sent with every request (an API key of the SIEM).
	Headers map[string]string `mapstructure:"headers"`
	// Encoding is the OTLP body: protobuf (default) or json.
	Encoding  string `mapstructure:"encoding"`
	BatchSize int    `mapstructure:"batch_size"` // entries per request, 1 to 10000
	// Timeout bounds one request; Interval is how often to look for new
	// entries; RetryMax caps the back-off between failed requests.
	Timeout  time.Duration `mapstructure:"timeout"`
	Interval time.Duration `mapstructure:"interval"`
	RetryMax time.Duration `mapstructure:"retry_max"`
}

// maxExportBatch bounds audit.export.batch_size: a request of ten
// thousand entries is already megabytes.
const maxExportBatch = 10000

func (c *Config) validateExport(v *validator) {
	x := c.Audit.Export
	if x.Endpoint == "" {
		return
	}
	if u, err := url.Parse(x.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path == "" || u.Path == "/" {
		v.fail("audit.export.endpoint", "expected the OTLP/HTTP logs URL, such as http://collector:4318/v1/logs, got %q", x.Endpoint)
	}
	for name := range x.Headers {
		if !httpguts.ValidHeaderFieldName(name) {
			v.fail("audit.export.headers", "%q is not an HTTP header name", name)
		}
	}
	v.oneOf("audit.export.encoding", x.Encoding, "protobuf", "json")
	if x.BatchSize < 1 || x.BatchSize > maxExportBatch {
		v.fail("audit.export.batch_size", "expected 1 to %d, got %d", maxExportBatch, x.BatchSize)
	}
	v.positive("audit.export.timeout", x.Timeout)
	v.positive("audit.export.interval", x.Interval)
	v.positive("audit.export.retry_max", x.RetryMax)
}
