package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store"

	"github.com/countersign/countersign/config"
)

// Operations endpoints, on the approver listener and on the agent listener:
//
//	/healthz  200 while the process serves HTTP at all (liveness)
//	/readyz   200 when it can do its work: the database takes a write (one
//	          that commits, so it needs the disk), the audit log passed its
//	          check at start and its appends are stored (auditReadiness),
//	          every configured upstream
//	          is connected, no witness refuses the log; else 503 naming what
//	          is not. A C2SP witness that lags (down, slow) is reported on
//	          its line but keeps the server ready, since calls do not wait
//	          for it, unless audit.witness_max_lag is set and exceeded.
//	          WARN lines keep it ready too: upstream tools held since
//	          their listing changed, and policies under tools: that name
//	          no tool their upstream offers (the other tools serve on),
//	          and tools whose approvers with a key cannot meet a quorum
//	          yet (quorum.go says why that keeps it ready)
//	/metrics  Prometheus text format (package metrics)
//
// They answer GET and HEAD only. /metrics is behind the listener's Host
// allow-list like the pages are (DNS rebinding would otherwise let any web
// page read it through a loopback listener); /healthz and /readyz say
// nothing worth stealing and are left open to probes that send a pod's IP.

// withOps serves the operations endpoints in front of next; allowHost
// decides which Host headers may read /metrics.
func (s *Stack) withOps(next http.Handler, allowHost func(string) bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	metrics := s.metrics.Handler()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if !allowHost(r.Host) {
			http.Error(w, "host not allowed", http.StatusForbidden)
			return
		}
		metrics.ServeHTTP(w, r)
	})
	mux.Handle("/", next)
	return mux
}

// readyz runs the readiness checks; each says "ok" or why not.
func (s *Stack) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	type check struct{ name, err, note, warn string }
	checks := []check{{name: "database"}, {name: "audit"}}
	probed, dbErr := s.dbProbe.writable(ctx)
	if dbErr != nil {
		checks[0].err = "not writable: " + dbErr.Error()
	}
	checks[1].err, checks[1].note = auditReadiness(s.audit, dbErr, probed)
	if s.upstreams != nil {
		up := map[string]bool{}
		for _, st := range s.upstreams.Status() {
			up[st.Name] = st.Up
			c := check{name: "upstream " + st.Name}
			if !st.Up {
				c.err = "not connected"
				if st.Err != "" {
					c.err += ": " + st.Err
				}
			}
			if len(st.Held) > 0 {
				c.warn = "held until an admin accepts their listing (countersign upstreams diff " + st.Name + "): " + strings.Join(st.Held, ", ")
			}
			checks = append(checks, c)
		}
		c := s.inForce.Load()
		for _, err := range UnknownUpstreamTools(c, s.tools) {
			var ce *config.Error
			if !errors.As(err, &ce) {
				continue
			}
			// A policy of a tool of an upstream that is down is not
			// judged: its tools are not listed.
			if u, _ := c.UpstreamOf(strings.TrimPrefix(ce.Path, "tools.")); up[u.Name] {
				checks = append(checks, check{name: "policy " + ce.Path, warn: "names no tool: " + ce.Msg})
			}
		}
	}
	if short, err := s.shortQuorums(ctx); err != nil {
		checks = append(checks, check{name: "quorums", warn: "cannot count the approvers with an enrolled key: " + err.Error()})
	} else {
		for _, q := range short {
			checks = append(checks, check{name: "quorum " + q.tool, warn: q.String()})
		}
	}
	now := time.Now()
	for _, r := range s.remotes {
		st := r.Status()
		c := check{name: "witness " + st.Name}
		lag := st.Lag(now).Truncate(time.Second)
		switch {
		case st.Refused():
			c.err = "refuses the log: " + st.Err.Error()
		case s.cfg.Audit.WitnessMaxLag > 0 && lag > s.cfg.Audit.WitnessMaxLag:
			c.err = fmt.Sprintf("%d entries (%s) not cosigned, over audit.witness_max_lag %s", st.Behind(), lag, s.cfg.Audit.WitnessMaxLag)
		case st.Behind() > 0 || st.Err != nil:
			c.note = fmt.Sprintf("cosigned tree size %d, %d entries (%s) behind", st.Cosigned, st.Behind(), lag)
		default:
			c.note = fmt.Sprintf("cosigned tree size %d", st.Cosigned)
		}
		if st.Err != nil && !st.Refused() {
			// Why it lags: down, slow, or answering with errors.
			if c.err != "" {
				c.err += "; last attempt: " + st.Err.Error()
			} else {
				c.note += "; last attempt: " + st.Err.Error()
			}
		}
		checks = append(checks, c)
	}
	ready := !slices.ContainsFunc(checks, func(c check) bool { return c.err != "" })
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	for _, c := range checks {
		switch {
		case c.err == "" && c.warn != "":
			fmt.Fprintf(w, "WARN  %s: %s\n", c.name, oneLine(c.warn))
		case c.err == "" && c.note != "":
			fmt.Fprintf(w, "ok    %s: %s\n", c.name, oneLine(c.note))
		case c.err == "":
			fmt.Fprintf(w, "ok    %s\n", c.name)
		default:
			fmt.Fprintf(w, "FAIL  %s: %s\n", c.name, oneLine(c.err))
		}
	}
}

// auditReadiness is the audit line of /readyz: failed when the log is
// broken, or when its last append could not be stored and the database
// has not taken a write since (dbErr, probed: the database probe's
// result and when it ran). A log that failed and has written nothing
// since, while the database takes writes again, is ready: it would
// otherwise wait for traffic a failed probe keeps away.
func auditReadiness(l *audit.Log, dbErr error, probed time.Time) (fail, note string) {
	if err := l.Err(); err != nil {
		return err.Error(), ""
	}
	wf := l.WriteErr()
	if wf == nil {
		return "", ""
	}
	since := wf.Since.UTC().Format(time.RFC3339)
	if dbErr != nil || !probed.After(wf.Since) {
		return fmt.Sprintf("cannot be written since %s: %v", since, wf.Err), ""
	}
	return "", fmt.Sprintf("appends failed from %s (%v); the database takes writes again", since, wf.Err)
}

// dbProbe checks that the database takes a write (on PostgreSQL, see
// probePostgres): on one connection, with a short busy timeout, it
// begins a write transaction, rewrites the schema's user_version with
// its own value and commits, so the page reaches the WAL: a rollback
// would write nothing, and pass on a full disk. A read-only file, a full
// or read-only file system, or a lock another process holds fails it;
// no value ever changes. One probe runs at a time, and a result is
// reused for a second, so probes cannot pile up on the writer.
type dbProbe struct {
	db *store.DB

	mu   sync.Mutex
	at   time.Time
	last error
}

const probeBusyTimeout = 1000 // ms; the store's own is 10 s

// writable returns the latest probe's result and when it started.
func (p *dbProbe) writable(ctx context.Context) (time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < time.Second {
		return p.at, p.last
	}
	p.at = time.Now()
	p.last = p.probe(ctx)
	return p.at, p.last
}

func (p *dbProbe) probe(ctx context.Context) (err error) {
	if p.db.Dialect() == store.PostgreSQL {
		return p.probePostgres(ctx)
	}
	conn, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", probeBusyTimeout)); err != nil {
		return err
	}
	// The connection goes back to the pool: give it back its patience.
	defer conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA busy_timeout = 10000")
	tx, err := conn.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int64
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		return err
	}
	return tx.Commit()
}

// probePostgres is the probe on PostgreSQL: a transaction that waits at
// most a second for locks takes a transaction id and updates nothing in
// schema_version, then rolls back. A standby, a read-only database or a
// lock held for longer fails it.
func (p *dbProbe) probePostgres(ctx context.Context) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		fmt.Sprintf("SET LOCAL lock_timeout = %d", probeBusyTimeout),
		"SELECT pg_current_xact_id()",
		"UPDATE schema_version SET version = version WHERE component = ''",
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// approverHosts matches Host headers as the approver page does: host:port,
// exactly, any case.
func approverHosts(allowed []string) func(string) bool {
	return func(host string) bool {
		return slices.ContainsFunc(allowed, func(h string) bool { return strings.EqualFold(h, host) })
	}
}

// agentHosts matches Host headers as the agent listener does: by name,
// whatever the port.
func agentHosts(allowed []string) func(string) bool {
	return func(host string) bool {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		return slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(strings.Trim(a, "[]"), host) })
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
