package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

// benchEntry is a routine call's entry as the guard appends it: its
// arguments already in RFC 8785 form (the guard canonicalises them once
// for the policy, the digest and the log).
func benchEntry(i int) Entry {
	return Entry{
		Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "transfer", Decision: "low", Rule: "tools.transfer.base",
		Args: json.RawMessage(fmt.Sprintf(`{"amount":%d,"currency":"USD","memo":"invoice 2026-%06d","to":"Vendor %d"}`, i, i, i%97)),
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db := storetest.Open(b, b.TempDir())
			l := openLog(b, db, seededKey(1), Options{})
			var n atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := l.Append(context.Background(), benchEntry(int(i))); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkOpen measures the startup check of a 100,000-entry log
// (every hash and link; signatures after the last checkpoint).
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	db := storetest.Open(b, dir)
	l, err := openTest(context.Background(), db, seededKey(1), Options{})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	const n = 100_000
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= n; i = next.Add(1) {
				if _, err := l.Append(context.Background(), benchEntry(int(i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	l.Close()
	b.ResetTimer()
	for b.Loop() {
		l, err := openTest(context.Background(), db, seededKey(1), Options{})
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
