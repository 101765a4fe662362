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
	"github.com/countersign/countersign/server/servertest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The in-process twins of csbench's scenarios, there to be profiled
// (-cpuprofile, -blockprofile, -memprofile); bench/csbench is the suite
// of record.

// callFrom has sessions go-sdk clients, one session each, call params in
// parallel b.N times in all, and returns how long each call took.
func callFrom(b *testing.B, base string, sessions int, params *sdk.CallToolParams) []time.Duration {
	clients := make(chan *sdk.ClientSession, sessions)
	for range sessions {
		clients <- connect(b, &sdk.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1}, protocolVersions[0], nil)
	}
	var mu sync.Mutex
	var took []time.Duration
	call := func(cs *sdk.ClientSession) bool {
		start := time.Now()
		res, err := cs.CallTool(context.Background(), params)
		if err != nil || res.IsError {
			b.Errorf("%s: %v %s", params.Name, err, servertest.ResultText(res))
			return false
		}
		mu.Lock()
		took = append(took, time.Since(start))
		mu.Unlock()
		return true
	}
	b.ResetTimer()
	if sessions == 1 {
		cs := <-clients
		for b.Loop() {
			if !call(cs) {
				b.FailNow()
			}
		}
	} else {
		// RunParallel starts parallelism×GOMAXPROCS goroutines; each
		// takes a session of its own.
		b.SetParallelism(max(1, sessions/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			cs := <-clients
			defer func() { clients <- cs }()
			for pb.Next() {
				if !call(cs) {
					return
				}
			}
		})
	}
	b.StopTimer()
	return took
}

// BenchmarkRoutineCall: get_balance over Streamable HTTP from one
// session, and from 16 at once.
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
				callFrom(b, base, sessions, &sdk.CallToolParams{Name: "get_balance", Arguments: map[string]any{"account": "operating"}})
			})
		}
	}
}

// BenchmarkSmallTransfers: small (low) transfers from 200 sessions at
// once, each a ledger write and its audit entries. It reports the p99 of
// one call alongside ns/op.
//
//	go test -run XXX -bench SmallTransfers -benchtime 800x ./cmd/countersign
func BenchmarkSmallTransfers(b *testing.B) {
	_, base := startHTTP(b, testConfig(b, func(c *config.Config) {
		c.Limits.CallsPerSecond, c.Limits.CallBurst = 1_000_000, 1_000_000
	}))
	took := callFrom(b, base, 200, &sdk.CallToolParams{Name: "transfer",
		Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}})
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
	callFrom(b, base, 50, &sdk.CallToolParams{Name: "transfer",
		Arguments: map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 20000, "currency": "USD"}})
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(float64(m.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(m.StackInuse)/(1<<20), "stack-MB")
}
