package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkRoutineCall is the in-process twin of csbench's routine-call
// scenario, there to be profiled: get_balance over Streamable HTTP from
// one session, and from 16 at once.
//
//	go test -run XXX -bench RoutineCall -cpuprofile cpu.out ./cmd/countersign
func BenchmarkRoutineCall(b *testing.B) {
	for _, sync := range []string{"full", "normal"} {
		_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
			c.Audit.Sync = sync
			c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
		}))
		for _, sessions := range []int{1, 16} {
			b.Run(fmt.Sprintf("sync=%s/sessions=%d", sync, sessions), func(b *testing.B) {
				clients := make(chan *sdk.ClientSession, sessions)
				for range sessions {
					clients <- connect(b, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
				}
				params := &sdk.CallToolParams{Name: "get_balance", Arguments: map[string]any{"account": "operating"}}
				b.ResetTimer()
				if sessions == 1 {
					cs := <-clients
					for b.Loop() {
						if res, err := cs.CallTool(context.Background(), params); err != nil || res.IsError {
							b.Fatalf("%v %+v", err, res)
						}
					}
					return
				}
				// RunParallel starts parallelism×GOMAXPROCS goroutines;
				// each takes a session of its own.
				b.SetParallelism(max(1, sessions/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					cs := <-clients
					defer func() { clients <- cs }()
					for pb.Next() {
						res, err := cs.CallTool(context.Background(), params)
						if err != nil || res.IsError {
							b.Errorf("%v %+v", err, res)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkSmallTransfers is csbench's write scenario in process: small
// (low) transfers from many sessions at once, each a ledger write and its
// audit entries. It reports the p99 of one call alongside ns/op.
//
//	go test -run XXX -bench SmallTransfers -benchtime 800x ./cmd/countersign
func BenchmarkSmallTransfers(b *testing.B) {
	_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
		c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
	}))
	const sessions = 200
	clients := make(chan *sdk.ClientSession, sessions)
	for range sessions {
		clients <- connect(b, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	}
	params := &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}}
	var mu sync.Mutex
	var took []time.Duration
	b.SetParallelism(sessions / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cs := <-clients
		defer func() { clients <- cs }()
		for pb.Next() {
			start := time.Now()
			res, err := cs.CallTool(context.Background(), params)
			if err != nil || res.IsError {
				b.Errorf("%v %s", err, resultText(res))
				return
			}
			mu.Lock()
			took = append(took, time.Since(start))
			mu.Unlock()
		}
	})
	b.StopTimer()
	slices.Sort(took)
	if len(took) > 0 {
		b.ReportMetric(float64(took[len(took)*99/100].Milliseconds()), "p99-ms")
	}
}

// BenchmarkPendingRequests raises b.N poll-mode transfers that wait for a
// human and leaves them pending, to profile what a pending request costs
// the server to hold:
//
//	go test -run XXX -bench PendingRequests -benchtime 10000x -memprofile mem.out ./cmd/countersign
func BenchmarkPendingRequests(b *testing.B) {
	_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
		c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
		c.Limits.PendingPerAgent, c.Limits.PendingTotal = 1_000_000, 1_000_000
		tr := c.Tools["transfer"]
		tr.Wait = "poll"
		c.Tools["transfer"] = tr
	}))
	const sessions = 50
	clients := make(chan *sdk.ClientSession, sessions)
	for range sessions {
		clients <- connect(b, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	}
	params := &sdk.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 20000, "currency": "USD"}}
	b.SetParallelism(sessions / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cs := <-clients
		defer func() { clients <- cs }()
		for pb.Next() {
			res, err := cs.CallTool(context.Background(), params)
			if err != nil || res.IsError {
				b.Errorf("%v %s", err, resultText(res))
				return
			}
		}
	})
	b.StopTimer()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(m.StackInuse)/(1<<20), "stack-MB")
}
