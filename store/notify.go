package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notifications tell every process on the database that a row changed,
// so that one waiting for it rereads now rather than at its next poll.
// A notification carries a channel (what kind of row) and an id (which
// one); it is a hint, never the data: a subscriber rereads the row.
//
// On PostgreSQL, Publish is pg_notify inside the transaction that
// changed the row, so it is sent only if that transaction commits, and
// reaches every replica's listener, this process's own included. Each
// DB (a process opens one) holds one LISTEN connection, from its first
// Subscribe; when it is lost, the listener
// reconnects with backoff and then calls every subscriber with the id
// "", since notifications sent meanwhile are gone: "reread everything".
//
// On SQLite there is one process, and Publish queues the notification on
// the transaction; InTx hands it to this process's subscribers after the
// commit, and drops it on a rollback. Another process writing the same
// file (the CLI) notifies nobody; subscribers still reread now and then.

// ListenApplicationName is the application_name of the connection a
// process's notifications arrive on, so that an operator (or a test) can
// tell it in pg_stat_activity.
const ListenApplicationName = "countersign listen"

type note struct{ channel, id string }

type subscriber struct {
	ctx context.Context // ended: hear nothing more, even before it is removed
	fn  func(id string)
}

// checkChannel refuses channel names PostgreSQL would truncate (LISTEN)
// or refuse (pg_notify), so both dialects accept the same names.
func checkChannel(channel string) error {
	if channel == "" || len(channel) > 63 {
		return fmt.Errorf("store: notification channel %q: want 1 to 63 bytes", channel)
	}
	return nil
}

// Publish notifies channel's subscribers, in every process on the
// database, that id changed, once tx commits. tx must be one InTx is
// running; a rollback (or a retry of fn) sends nothing. Ids are at most
// 7,999 bytes.
func (db *DB) Publish(ctx context.Context, tx *sql.Tx, channel, id string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	if len(id) >= 8000 {
		return fmt.Errorf("store: notification id of %d bytes: want fewer than 8000", len(id))
	}
	// A transaction that announces the same change twice (a decision
	// queuing two audit entries of one request) sends it once: PostgreSQL
	// would deliver it once anyway, and the round trip is saved.
	n := note{channel, id}
	db.mu.Lock()
	notes, ok := db.txs[tx]
	sent := slices.Contains(notes, n)
	if ok && !sent {
		db.txs[tx] = append(notes, n)
	}
	db.mu.Unlock()
	if !ok {
		return errors.New("store: Publish needs a transaction InTx is running")
	}
	if db.dialect == PostgreSQL && !sent {
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify(?, ?)`, channel, id); err != nil {
			return fmt.Errorf("store: notify %s: %w", channel, err)
		}
	}
	return nil
}

// Subscribe calls fn with the id of each notification on channel, until
// ctx ends, and with "" whenever notifications may have been lost (after
// the listener reconnected): the caller then rereads all it watches.
// Every notification committed after Subscribe returns reaches fn, or
// is covered by such a "". fn runs on the listener's goroutine, one call
// at a time for the whole process: it must return quickly (signal a
// channel, do not query).
//
// On PostgreSQL, Subscribe returns once the channel is listened on, or
// at once while the listener is reconnecting (a "" follows the
// reconnection); an error only when ctx ends first.
func (db *DB) Subscribe(ctx context.Context, channel string, fn func(id string)) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	return db.hub.subscribe(ctx, channel, &subscriber{ctx: ctx, fn: fn})
}

// hub holds a process's subscribers and, on PostgreSQL, its listener.
type hub struct {
	db  *DB
	cfg *pgx.ConnConfig // nil on SQLite

	mu        sync.Mutex
	subs      map[string]map[*subscriber]struct{}
	listening map[string]bool // on the current LISTEN connection
	asks      []ask           // channels to LISTEN, with who waits
	interrupt func()          // ends the listener's wait, to take asks
	down      bool            // no LISTEN connection: a "" will follow one
	closed    bool
	stop      context.CancelFunc
	done      chan struct{} // closed when the listener has stopped
}

type ask struct {
	channel string
	done    chan struct{}
}

func newHub(db *DB, cfg *pgx.ConnConfig) *hub {
	if cfg != nil {
		cfg = cfg.Copy()
		cfg.RuntimeParams["application_name"] = ListenApplicationName
	}
	return &hub{db: db, cfg: cfg, subs: map[string]map[*subscriber]struct{}{}, listening: map[string]bool{}}
}

func (h *hub) subscribe(ctx context.Context, channel string, s *subscriber) error {
	h.mu.Lock()
	if h.subs[channel] == nil {
		h.subs[channel] = map[*subscriber]struct{}{}
	}
	h.subs[channel][s] = struct{}{}
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[channel], s)
		if len(h.subs[channel]) == 0 {
			delete(h.subs, channel)
		}
	})
	if h.closed {
		h.mu.Unlock()
		return errors.New("store: subscribe: the database is closed")
	}
	if h.cfg == nil || h.listening[channel] || h.down {
		h.mu.Unlock()
		return nil
	}
	if h.done == nil {
		var lctx context.Context
		lctx, h.stop = context.WithCancel(context.Background())
		h.done = make(chan struct{})
		go h.listen(lctx)
	}
	a := ask{channel, make(chan struct{})}
	h.asks = append(h.asks, a)
	if h.interrupt != nil {
		h.interrupt()
	}
	done := h.done
	h.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-done:
		return errors.New("store: subscribe: the database is closed")
	case <-ctx.Done():
		return fmt.Errorf("store: subscribe to %s: %w", channel, ctx.Err())
	}
}

// deliverLocal hands a committed transaction's notifications to this
// process's subscribers; on PostgreSQL they come back through LISTEN.
func (h *hub) deliverLocal(notes []note) {
	if h.cfg != nil {
		return
	}
	for _, n := range notes {
		h.deliver(n.channel, n.id)
	}
}

func (h *hub) deliver(channel, id string) {
	h.mu.Lock()
	subs := make([]*subscriber, 0, len(h.subs[channel]))
	for s := range h.subs[channel] {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		if s.ctx.Err() == nil {
			s.fn(id)
		}
	}
}

// rereadAll tells every subscriber that notifications may have been lost.
func (h *hub) rereadAll() {
	h.mu.Lock()
	var subs []*subscriber
	for _, ss := range h.subs {
		for s := range ss {
			subs = append(subs, s)
		}
	}
	h.mu.Unlock()
	for _, s := range subs {
		if s.ctx.Err() == nil {
			s.fn("")
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	stop, done := h.stop, h.done
	h.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// listen keeps one LISTEN connection and delivers what arrives on it,
// until ctx ends.
func (h *hub) listen(ctx context.Context) {
	defer close(h.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	lost, failures := false, 0
	drop := func(err error) {
		h.db.log.Warn("store: notifications: no LISTEN connection; reconnecting", "err", err)
		if conn != nil {
			conn.Close(context.Background())
			conn = nil
		}
		h.mu.Lock()
		clear(h.listening)
		h.down = true
		h.mu.Unlock()
		lost = true
		failures++
		sleep(ctx, reconnect.Pause(failures))
	}
	for ctx.Err() == nil {
		if conn == nil {
			c, err := pgx.ConnectConfig(ctx, h.cfg)
			if err != nil {
				// While there is no connection, a subscriber waits
				// for nothing: the "" after reconnecting covers it.
				h.mu.Lock()
				h.down = true
				for _, a := range h.asks {
					close(a.done)
				}
				h.asks = nil
				h.mu.Unlock()
				drop(err)
				continue
			}
			conn = c
			h.mu.Lock()
			h.down = false
			for ch := range h.subs {
				h.asks = append(h.asks, ask{ch, make(chan struct{})})
			}
			h.mu.Unlock()
		}
		if err := h.listenAsked(ctx, conn); err != nil {
			drop(err)
			continue
		}
		if lost {
			lost, failures = false, 0
			h.rereadAll()
		}
		wctx, cancel := context.WithCancel(ctx)
		h.mu.Lock()
		h.interrupt = cancel
		if len(h.asks) > 0 {
			cancel()
		}
		h.mu.Unlock()
		n, err := conn.WaitForNotification(wctx)
		h.mu.Lock()
		h.interrupt = nil
		h.mu.Unlock()
		interrupted := wctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			h.deliver(n.Channel, n.Payload)
		case ctx.Err() != nil:
			return
		case interrupted && !conn.IsClosed():
			// woken to LISTEN on a new channel
		default:
			drop(err)
		}
	}
}

// listenAsked LISTENs on the channels subscribers asked for and lets
// them go on.
func (h *hub) listenAsked(ctx context.Context, conn *pgx.Conn) error {
	h.mu.Lock()
	asks := h.asks
	h.asks = nil
	h.mu.Unlock()
	for i, a := range asks {
		h.mu.Lock()
		have := h.listening[a.channel]
		h.mu.Unlock()
		if !have {
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{a.channel}.Sanitize()); err != nil {
				h.mu.Lock()
				h.asks = append(asks[i:], h.asks...)
				h.mu.Unlock()
				return fmt.Errorf("listen %s: %w", a.channel, err)
			}
			h.mu.Lock()
			h.listening[a.channel] = true
			h.mu.Unlock()
		}
		close(a.done)
	}
	return nil
}

// reconnect is how the listener waits before connecting again: from
// 100 ms up to 5 s, for as long as it takes.
var reconnect = Backoff{First: 100 * time.Millisecond, Max: 5 * time.Second}
