package auditpg

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// BenchmarkAppend is the audit append at 64 writers a Log: on SQLite,
// and on PostgreSQL (fsync on, same machine) with one Log and with
// three on one database, as replicas, summed. On PostgreSQL it reports
// the head lock's wait and hold per batch, and the batch size.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 20000x ./audit/auditpg
func BenchmarkAppend(b *testing.B) {
	const writers = 64
	b.Run("sqlite", func(b *testing.B) {
		db := storetest.Connect(b, filepath.Join(b.TempDir(), store.FileName))
		l, err := Open(context.Background(), db, seededKey(1), audit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		appendAll(b, []*audit.Log{l}, writers)
	})
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("postgresql/replicas=%d", replicas), func(b *testing.B) {
			url := pgtest.URL(b)
			var logs []*audit.Log
			var backends []*Backend
			for range replicas {
				db := storetest.Connect(b, url)
				be, err := New(context.Background(), db)
				if err != nil {
					b.Fatal(err)
				}
				l, err := audit.Open(context.Background(), db.DB, seededKey(1), audit.Options{Backend: be})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				logs, backends = append(logs, l), append(backends, be)
			}
			appendAll(b, logs, writers)
			var sum Stats
			for _, be := range backends {
				s := be.Stats()
				sum.Batches += s.Batches
				sum.Entries += s.Entries
				sum.Moved += s.Moved
				sum.Wait += s.Wait
				sum.Hold += s.Hold
			}
			if sum.Batches > 0 {
				n := time.Duration(sum.Batches)
				b.ReportMetric(float64((sum.Wait / n).Microseconds()), "µs-wait/batch")
				b.ReportMetric(float64((sum.Hold / n).Microseconds()), "µs-hold/batch")
				b.ReportMetric(float64(sum.Entries)/float64(sum.Batches), "entries/batch")
			}
		})
	}
}

// appendAll appends b.N entries from writers goroutines on each log.
func appendAll(b *testing.B, logs []*audit.Log, writers int) {
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, l := range logs {
		for range writers {
			wg.Go(func() {
				for {
					i := n.Add(1)
					if i > int64(b.N) {
						return
					}
					if _, err := l.Append(context.Background(), routine(int(i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}
