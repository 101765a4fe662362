package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/store"
	"github.com/countersign/countersign/store/pgtest"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// The replicas group's targets: one process on SQLite, and serve replicas
// on one PostgreSQL database (issue 24), driven through one of them or
// all three. Their figures are printed beside SQLite's (report.print).
const (
	onSQLite     = "sqlite"
	onOneReplica = "postgresql, 1 replica"
	onReplicas   = "postgresql, 3 replicas"
)

// replicaSizes scale the replicas group.
type replicaSizes struct {
	appends   string // -benchtime of the audit append benchmark
	latency   int    // one-session calls for p50/p99
	transfers int    // small transfers spread over the sessions
	sessions  int
	approvals int
}

// replicas measures PostgreSQL replicas beside SQLite in one run: the
// audit append at 64 writers (audit/auditpg's benchmark: one log, and
// three on one database summed, with the head lock's wait and hold per
// batch); one durable commit on each engine; one session's calls that
// read no usage, read it (get_balance with a rule on usage) and read it
// and write (transfer); small transfers at many sessions on one replica
// and spread over three; and an approval tapped on another replica's page
// than the one where the call waits. PostgreSQL comes from store/pgtest
// ($COUNTERSIGN_TEST_PG, else a cluster of csbench's own from the
// distribution's binaries, fsync on, stopped at the end).
func replicas(ctx context.Context, r *report, root, work, bin string, short bool) error {
	sz := replicaSizes{appends: "20000x", latency: 1000, transfers: 800, sessions: 400, approvals: 300}
	if short {
		sz = replicaSizes{appends: "200x", latency: 30, transfers: 40, sessions: 40, approvals: 5}
	}
	if err := appendBench(r, root, sz.appends); err != nil {
		return err
	}
	cfg, err := usageConfig(bin, work)
	if err != nil {
		return err
	}
	defer pgtest.Stop()
	url, drop, err := pgtest.Database()
	if err != nil {
		return fmt.Errorf("postgresql: %w", err)
	}
	defer drop()
	for target, db := range map[string]string{onSQLite: filepath.Join(work, "commits.db"), onOneReplica: url} {
		if err := durableCommits(ctx, r, target, db, sz.latency); err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
	}

	// SQLite: one process, as the default runs.
	lite, err := startNode(ctx, work, bin, []string{cfg})
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	err = measureNodes(ctx, r, bin, onSQLite, []*node{lite}, filepath.Join(lite.dir, store.FileName), sz)
	lite.stop()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}

	// PostgreSQL: three replicas with one key file on one database.
	keyFile := filepath.Join(work, "server.key")
	if out, err := exec.Command(bin, "audit", "keygen", "--out", keyFile).CombinedOutput(); err != nil {
		return fmt.Errorf("audit keygen: %v\n%s", err, out)
	}
	env := []string{cfg, "COUNTERSIGN_STORE_URL=" + url, "COUNTERSIGN_AUDIT_KEY_FILE=" + keyFile}
	var nodes []*node
	defer func() {
		for _, nd := range nodes {
			nd.stop()
		}
	}()
	for i := range 3 {
		nd, err := startNode(ctx, work, bin, env)
		if err != nil {
			return fmt.Errorf("postgresql replica %d: %w", i+1, err)
		}
		nodes = append(nodes, nd)
	}
	if err := measureNodes(ctx, r, bin, onOneReplica, nodes[:1], url, sz); err != nil {
		return fmt.Errorf("postgresql, 1 replica: %w", err)
	}
	if err := measureNodes(ctx, r, bin, onReplicas, nodes, url, sz); err != nil {
		return fmt.Errorf("postgresql, 3 replicas: %w", err)
	}
	return connections(ctx, r, url, len(nodes))
}

// connections records how many connections each replica holds to the
// database after the load (README: max_connections), its pool and its
// own dedicated ones.
func connections(ctx context.Context, r *report, url string, replicas int) error {
	db, err := store.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
		return err
	}
	r.add(onReplicas, "connections to the database after the load", "per_replica", float64(n)/float64(replicas))
	return nil
}

// durableCommits times n one-row transactions committed durably (SQLite
// with synchronous FULL, PostgreSQL with synchronous_commit on, as
// audit.sync: full opens them): the floor under every write a call makes,
// on each engine in the same run.
func durableCommits(ctx context.Context, r *report, target, dbTarget string, n int) error {
	db, err := store.Connect(ctx, dbTarget)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE csbench_commits (n BIGINT)`); err != nil {
		return err
	}
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		if _, err := db.ExecContext(ctx, `INSERT INTO csbench_commits (n) VALUES (?)`, i); err != nil {
			return err
		}
		d[i] = time.Since(start)
	}
	l := percentiles(d)
	r.add(target, "one durable commit (one-row INSERT)", "p50_ms", l.p50)
	r.add(target, "one durable commit (one-row INSERT)", "p99_ms", l.p99)
	return nil
}

// usageConfig writes the default configuration (countersign init) with
// one change, and returns the environment variable that points serve at
// it: get_balance gets a rule that reads usage (and never fires), so one
// read-only call can be timed with its usage window read and counted in
// the database, beside list_counterparties, which reads none.
func usageConfig(bin, work string) (string, error) {
	dir := filepath.Join(work, "config")
	if out, err := exec.Command(bin, "init", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("countersign init: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "mcp.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if b, err = withUsageRule(b); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	return "COUNTERSIGN_CONFIG=" + path, nil
}

// withUsageRule gives get_balance, low in the default configuration, a
// rule that reads usage.calls_10m and never fires.
func withUsageRule(config []byte) ([]byte, error) {
	const plain = "  get_balance:\n    level: low\n"
	if !bytes.Contains(config, []byte(plain)) {
		return nil, fmt.Errorf("no %q to give a usage rule to", plain)
	}
	return bytes.Replace(config, []byte(plain), []byte(plain+`    approvers: [role:treasury]
    rules:
      - name: csbench-reads-usage
        when: "usage.calls_10m > 1000000000"
        level: high
`), 1), nil
}

// measureNodes measures one target: calls on the first node alone, or
// spread over every node; an approval waits on the first node and is
// tapped on the last one's page. db is the nodes' database.
func measureNodes(ctx context.Context, r *report, bin, target string, nodes []*node, db string, sz replicaSizes) error {
	first, last := nodes[0], nodes[len(nodes)-1]
	if len(nodes) == 1 {
		for _, c := range []struct {
			scenario string
			call     call
		}{
			{"list_counterparties (no rule), 1 session", call{"list_counterparties", map[string]any{}}},
			{"get_balance (its rule reads usage), 1 session", call{"get_balance", map[string]any{"account": "operating"}}},
			{"transfer (its rules read usage; it writes), 1 session", call{"transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}}},
		} {
			lat, err := latency(ctx, first.session, c.call, sz.latency)
			if err != nil {
				return fmt.Errorf("%s: %w", c.call.tool, err)
			}
			r.add(target, c.scenario, "p50_ms", lat.p50)
			r.add(target, c.scenario, "p99_ms", lat.p99)
		}
	}
	// Each node gets its share of the sessions, as a balancer would.
	var sessions []*sdk.ClientSession
	for i, nd := range nodes {
		n := sz.sessions / len(nodes)
		if i < sz.sessions%len(nodes) {
			n++
		}
		s, err := nd.sessions(ctx, n)
		if err != nil {
			return err
		}
		sessions = append(sessions, s...)
	}
	transfer := call{"transfer", map[string]any{"from": "operating", "to": "Globex Logistics", "amount": 1, "currency": "USD"}}
	res := fixedCalls(ctx, sessions, transfer, sz.transfers)
	name := fmt.Sprintf("%d small transfers, %d sessions", sz.transfers, len(sessions))
	r.add(target, name, "calls_per_s", res.perSecond)
	r.add(target, name, "p50_ms", res.p50)
	r.add(target, name, "p99_ms", res.p99)
	r.add(target, name, "errors", float64(res.errors))
	if res.firstErr != nil {
		fmt.Fprintf(os.Stderr, "csbench: %s: %d of %d transfers failed, the first: %v\n", target, res.errors, sz.transfers, res.firstErr)
	}

	if len(nodes) == 1 || target == onReplicas {
		key, err := first.enrolled(bin)
		if err != nil {
			return err
		}
		as, err := approvals(ctx, first, last, key, sz.approvals, "Bench payee "+target)
		if err != nil {
			return err
		}
		decided, err := decidedToResult(ctx, db, as)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("approval, %d requests", sz.approvals)
		tap, dec := percentiles(tapToResult(as)), percentiles(decided)
		r.add(target, name, "tap_to_result_p50_ms", tap.p50)
		r.add(target, name, "tap_to_result_p99_ms", tap.p99)
		r.add(target, name, "decided_to_result_p50_ms", dec.p50)
		r.add(target, name, "decided_to_result_p99_ms", dec.p99)
	}
	return nil
}

// enrolled is the node's enrolled key, enrolling it the first time. On
// one database a key enrolled through one replica's page signs on every
// replica's.
func (nd *node) enrolled(bin string) (*approvaltest.SoftKey, error) {
	if nd.key == nil {
		k, err := nd.enroll(bin)
		if err != nil {
			return nil, err
		}
		nd.key = k
	}
	return nd.key, nil
}

// decidedToResult is, for each approval, the time from the decision
// written in the database (approval_requests.decided_at, stamped by the
// replica that took the tap inside the transaction that commits it, on
// this machine's clock) to the waiting call's result reaching the agent:
// the replicas' hand-off, with the rest of that transaction and its
// commit, and none of the ceremony before it.
func decidedToResult(ctx context.Context, target string, as []approved) ([]time.Duration, error) {
	db, err := store.Connect(ctx, target)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	d := make([]time.Duration, len(as))
	for i, a := range as {
		var ns int64
		if err := db.QueryRowContext(ctx, `SELECT decided_at FROM approval_requests WHERE id = ?`, a.id).Scan(&ns); err != nil {
			return nil, fmt.Errorf("request %s: %w", a.id, err)
		}
		d[i] = a.returned.Sub(time.Unix(0, ns))
	}
	return d, nil
}

var benchMetric = regexp.MustCompile(`([\d.e+-]+) (\S+)`)

// appendBench runs audit/auditpg's BenchmarkAppend (SQLite, and
// PostgreSQL with one log and with three on one database) and records its
// own metrics: appends a second, and on PostgreSQL the head lock's wait
// and hold and the entries per batch.
func appendBench(r *report, root, benchtime string) error {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "BenchmarkAppend", "-benchtime", benchtime, "./audit/auditpg")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench ./audit/auditpg: %v\n%s", err, out)
	}
	if appendFigures(r, string(out)) == 0 {
		return errors.New("go test -bench ./audit/auditpg printed no BenchmarkAppend figures:\n" + string(out))
	}
	return nil
}

// appendFigures records the figures of BenchmarkAppend's output and
// returns how many it found.
func appendFigures(r *report, out string) int {
	targets := map[string]string{"sqlite": onSQLite, "postgresql/replicas=1": onOneReplica, "postgresql/replicas=3": onReplicas}
	units := map[string]string{"appends/s": "appends_per_s", "µs-wait/batch": "lock_wait_us_per_batch",
		"µs-hold/batch": "lock_hold_us_per_batch", "entries/batch": "entries_per_batch"}
	found := 0
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(line, " ")
		sub, ok2 := strings.CutPrefix(name, "BenchmarkAppend/")
		if !ok || !ok2 {
			continue
		}
		if i := strings.LastIndexByte(sub, '-'); i > 0 {
			sub = sub[:i] // the -GOMAXPROCS suffix
		}
		target, ok := targets[sub]
		if !ok {
			continue
		}
		for _, m := range benchMetric.FindAllStringSubmatch(rest, -1) {
			if metric, ok := units[m[2]]; ok {
				v, _ := strconv.ParseFloat(m[1], 64)
				r.add(target, appendScenario, metric, v)
				found++
			}
		}
	}
	return found
}

const appendScenario = "audit append, 64 writers a log"
