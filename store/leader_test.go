//go:build unix

package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	"github.com/countersign/countersign/store/storetest"
)

// Of two replicas one leads; when its connection is cut, its work is
// told to stop and leadership is taken again.
func TestOneLeaderAndItMovesWhenItsConnectionIsCut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := pgtest.URL(t)
	a, b := storetest.Connect(t, u), storetest.Connect(t, u)
	var terms atomic.Int32
	started := make(chan struct{}, 8)
	for _, db := range []*store.DB{a, b} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			db.Lead(ctx, "one", func(ctx context.Context) {
				started <- struct{}{}
				<-ctx.Done()
				terms.Add(1)
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	<-started
	// The other tries every second meanwhile; it must not lead.
	time.Sleep(3 * time.Second)
	if len(started) != 0 {
		t.Fatal("a second replica led while the first held the lock")
	}
	var pid int
	if err := a.QueryRow(`SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		WHERE a.datname = current_database() AND a.application_name = ? AND l.locktype = 'advisory' AND l.granted`,
		store.LeaderApplicationName+" one").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	terminate(t, a, pid)
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatal("nobody leads after the leader's connection was cut")
	}
	eventually(t, "the cut term ended", func() bool { return terms.Load() == 1 })
}

// When the leading process is killed, the other replica leads.
func TestLeadershipMovesWhenTheLeaderIsKilled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := pgtest.URL(t)
	db := storetest.Connect(t, u)
	c := startChild(t, "leader", u)
	c.expect(t, "leading")
	leading := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.Lead(ctx, "child", func(ctx context.Context) {
			leading <- struct{}{}
			<-ctx.Done()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(2 * time.Second)
	if len(leading) != 0 {
		t.Fatal("this replica led while the child did")
	}
	c.signal(t, syscall.SIGKILL)
	select {
	case <-leading:
	case <-time.After(wait):
		t.Fatal("leadership did not move after the leader was killed")
	}
}

// On SQLite the one process always leads, until its context ends.
func TestSQLiteAlwaysLeads(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	db := storetest.Connect(t, filepath.Join(t.TempDir(), store.FileName))
	ran := make(chan struct{})
	err := db.Lead(ctx, "any", func(ctx context.Context) {
		close(ran)
		cancel()
		<-ctx.Done()
	})
	<-ran
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Lead returned %v, want its context's error", err)
	}
}
