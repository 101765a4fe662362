package page

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/countersign/countersign/approval"
)

// BenchmarkRequestPageWeight fetches a request page as a phone first loads
// it, over a real listener: the HTML and the two files it links (app.js,
// style.css; the QR code is inline SVG, there are no images or fonts). It
// reports their bytes as sent and gzipped (as a proxy in front would send
// them; the server itself does not compress):
//
//	go test -run XXX -bench RequestPageWeight -benchtime 20x ./approval/page
func BenchmarkRequestPageWeight(b *testing.B) {
	slog.SetLogLoggerLevel(slog.LevelWarn)
	defer slog.SetLogLoggerLevel(slog.LevelInfo)
	for _, tc := range []struct {
		name string
		req  approval.NewRequest
	}{
		{"transfer", paymentRequest("alice")},
		{"long-transfer", longTransfer("alice")},
		{"long-gateway-call", longGatewayCall("alice")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, base, addr := newServedFixture(b, nil)
			req, err := f.svc.Create(context.Background(), tc.req)
			if err != nil {
				b.Fatal(err)
			}
			client := &http.Client{Transport: &http.Transport{DisableCompression: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}}}
			get := func(path string) []byte {
				resp, err := client.Get(base + path)
				if err != nil {
					b.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
				}
				return body
			}
			gzipped := func(p []byte) int {
				var buf bytes.Buffer
				zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
				zw.Write(p)
				zw.Close()
				return buf.Len()
			}
			var html, assets, htmlGz, assetsGz int
			for b.Loop() {
				page := get("/requests/" + req.ID)
				html, htmlGz = len(page), gzipped(page)
				assets, assetsGz = 0, 0
				for _, p := range []string{"/static/app.js", "/static/style.css"} {
					a := get(p)
					assets, assetsGz = assets+len(a), assetsGz+gzipped(a)
				}
			}
			b.ReportMetric(float64(html), "html-B")
			b.ReportMetric(float64(htmlGz), "html-gzip-B")
			b.ReportMetric(float64(html+assets), "total-B")
			b.ReportMetric(float64(htmlGz+assetsGz), "total-gzip-B")
		})
	}
}
