package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

type call struct {
	tool string
	args map[string]any
}

func (c call) do(ctx context.Context, s *sdk.ClientSession) error {
	res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: c.tool, Arguments: c.args})
	if err != nil {
		return err
	}
	if res.IsError {
		var b strings.Builder
		for _, c := range res.Content {
			if t, ok := c.(*sdk.TextContent); ok {
				b.WriteString(t.Text)
			}
		}
		return errors.New(b.String())
	}
	return nil
}

type latencies struct{ p50, p99 float64 }

func latency(ctx context.Context, s *sdk.ClientSession, c call, n int) (latencies, error) {
	for range min(n/10, 100) { // warm up connections and caches
		if err := c.do(ctx, s); err != nil {
			return latencies{}, err
		}
	}
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		if err := c.do(ctx, s); err != nil {
			return latencies{}, err
		}
		d[i] = time.Since(start)
	}
	return percentiles(d), nil
}

func percentiles(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		return float64(d[min(len(d)-1, int(q*float64(len(d))))].Microseconds()) / 1000
	}
	return latencies{p50: at(0.50), p99: at(0.99)}
}

type rate struct {
	perSecond float64
	p50, p99  float64
	errors    int64
	firstErr  error // fixedCalls: the first call that failed, to say why
}

// throughput keeps every session busy for the window and counts calls.
func throughput(ctx context.Context, sessions []*sdk.ClientSession, c call, window time.Duration) rate {
	var ok, failed atomic.Int64
	deadline := time.Now().Add(window)
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if c.do(ctx, s) != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return rate{perSecond: float64(ok.Load()) / window.Seconds(), errors: failed.Load()}
}

// fixedCalls makes n calls spread over the sessions, all at once.
func fixedCalls(ctx context.Context, sessions []*sdk.ClientSession, c call, n int) rate {
	d := make([]time.Duration, n)
	var failed atomic.Int64
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t := time.Now()
				if err := c.do(ctx, s); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
				d[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	l := percentiles(d)
	return rate{perSecond: float64(n) / elapsed.Seconds(), p50: l.p50, p99: l.p99, errors: failed.Load(), firstErr: firstErr}
}
