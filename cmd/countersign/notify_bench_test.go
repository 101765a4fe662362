package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/server/servertest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkNotifyLatency measures how soon an approver hears of a request:
// from the moment an agent calls a high-risk transfer (wait: poll, so the
// call returns once the request is raised) to the moment a webhook receiver
// on 127.0.0.1 has the signed message's body. That bounds "raised ->
// delivered" from above, through the real MCP transport, guard, approval
// service and notifier. It reports the median and the slowest, not a
// verdict:
//
//	go test -run XXX -bench NotifyLatency -benchtime 200x ./cmd/countersign
func BenchmarkNotifyLatency(b *testing.B) {
	type hit struct {
		id string
		at time.Time
	}
	hits := make(chan hit, 64)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		var m notify.Message
		if json.Unmarshal(body, &m) == nil && m.Event == "requested" {
			hits <- hit{m.RequestID, at}
		}
	}))
	b.Cleanup(hook.Close)
	_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
		tool := c.Tools["transfer"]
		tool.Wait = "poll"
		c.Tools["transfer"] = tool
		c.Notify = []config.Notify{{Type: "webhook", URL: hook.URL, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Events: []string{"requested"}}}
		// One agent raising request after request is the load on purpose.
		c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
		c.Limits.PendingPerAgent, c.Limits.PendingTotal = 1_000_000, 1_000_000
	}))
	cs := connect(b, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	params := &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 50000, "currency": "USD"}}
	ctx := context.Background()
	var toHook, toReturn []time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := cs.CallTool(ctx, params)
		returned := time.Since(start)
		if err != nil || res.IsError {
			b.Fatalf("%v %+v", err, res)
		}
		var pending struct {
			ID string `json:"auth_req_id"`
		}
		json.Unmarshal([]byte(servertest.ResultText(res)), &pending)
		for {
			h := <-hits
			if h.id == pending.ID {
				toHook = append(toHook, h.at.Sub(start))
				break
			}
		}
		toReturn = append(toReturn, returned)
	}
	slices.Sort(toHook)
	slices.Sort(toReturn)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(toHook[len(toHook)/2]), "ms-to-webhook-p50")
	b.ReportMetric(ms(toHook[len(toHook)-1]), "ms-to-webhook-max")
	b.ReportMetric(ms(toReturn[len(toReturn)/2]), "ms-to-call-return-p50")
}
