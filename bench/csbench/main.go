// Command csbench measures Countersign against a bare MCP server in one run
// on one machine, and prints ratios first, then absolute figures.
//
//	go run ./bench/csbench [-short] [-out bench-results.json]
//
// It builds the countersign binary and the baseline (bench/baseline: a bare
// mcp-go server with the same ledger tools, no policy, no audit), starts
// each on 127.0.0.1, and drives both with the same official go-sdk client:
//
//   - routine call (get_balance) over Streamable HTTP and stdio: p50/p99
//     latency with one caller; throughput with 1, 16 and 64 concurrent
//     callers (HTTP: one session each; stdio: concurrent calls on the one
//     session a stdio server has);
//   - small transfers (low risk, they write) at 16, 200 and 400 concurrent
//     sessions: throughput, p99, errors;
//   - machine-side approval latency: from a software key's tap reaching
//     the approver page to the result reaching the waiting agent;
//   - memory: Countersign's RSS with N calls waiting for approval, and with
//     N poll-mode requests pending;
//   - micro benchmarks (go test -bench): policy decision, digest, audit
//     append at 1 and 64 writers, and the physical references (Ed25519
//     sign/verify, one durable SQLite commit).
//
// The same figures are written as JSON to -out for comparison between runs.
// Everything it starts listens on 127.0.0.1 and stops when it ends.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/vocab"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	short := flag.Bool("short", false, "a quick run that only checks the suite works (CI)")
	out := flag.String("out", "bench-results.json", "where to write the results as JSON")
	only := flag.String("only", "", "run only these groups, comma-separated: calls, approval, memory, micro (default: all)")
	flag.Parse()
	groups := map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		switch g = strings.TrimSpace(g); g {
		case "":
		case "calls", "approval", "memory", "micro":
			groups[g] = true
		default:
			fmt.Fprintf(os.Stderr, "csbench: -only: unknown group %q (expected calls, approval, memory or micro)\n", g)
			os.Exit(2)
		}
	}
	want := func(g string) bool { return len(groups) == 0 || groups[g] }
	if err := run(*short, *out, want); err != nil {
		fmt.Fprintln(os.Stderr, "csbench:", err)
		os.Exit(1)
	}
}

// sizes scale the run; -short shrinks them so CI only checks it works.
type sizes struct {
	approvals    int
	latencyCalls int
	window       time.Duration
	transfers    int
	waiting      int
	pending      int
	benchtime    string
}

func run(short bool, outPath string, want func(group string) bool) error {
	sz := sizes{approvals: 1000, latencyCalls: 2000, window: 5 * time.Second, transfers: 800, waiting: 1000, pending: 10000, benchtime: "1s"}
	if short {
		sz = sizes{approvals: 5, latencyCalls: 50, window: 300 * time.Millisecond, transfers: 40, waiting: 20, pending: 50, benchtime: "1x"}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "csbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cs, base := filepath.Join(work, "countersign"), filepath.Join(work, "baseline")
	for bin, pkg := range map[string]string{cs: "./cmd/countersign", base: "./bench/baseline"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Dir, build.Stderr = root, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building %s: %w", pkg, err)
		}
	}

	r := &report{Machine: machine(), Started: time.Now().UTC().Format(time.RFC3339)}
	ctx := context.Background()
	get := call{"get_balance", map[string]any{"account": "operating"}}
	transfer := call{"transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 1, "currency": "USD"}}

	targets := []struct {
		name string
		cmd  func(dir string, http string) *exec.Cmd
	}{
		{"baseline", func(dir, addr string) *exec.Cmd {
			args := []string{"-data", dir}
			if addr != "" {
				args = append(args, "-http", addr)
			}
			return exec.Command(base, args...)
		}},
		{"countersign", func(dir, addr string) *exec.Cmd { return countersign(cs, dir, addr, nil) }},
		{"countersign sync=normal", func(dir, addr string) *exec.Cmd {
			return countersign(cs, dir, addr, []string{"COUNTERSIGN_AUDIT_SYNC=normal"})
		}},
	}
	if !want("calls") {
		targets = nil
	}
	for _, target := range targets {
		// Streamable HTTP.
		srv, err := startHTTP(ctx, work, target.cmd)
		if err != nil {
			return fmt.Errorf("%s over HTTP: %w", target.name, err)
		}
		lat, err := latency(ctx, srv.session, get, sz.latencyCalls)
		if err != nil {
			srv.stop()
			return fmt.Errorf("%s: %w", target.name, err)
		}
		r.add(target.name, "routine call, HTTP, 1 session", "p50_ms", lat.p50)
		r.add(target.name, "routine call, HTTP, 1 session", "p99_ms", lat.p99)
		for _, n := range []int{1, 16, 64} {
			sessions, err := srv.sessions(ctx, n)
			if err != nil {
				srv.stop()
				return err
			}
			tp := throughput(ctx, sessions, get, sz.window)
			name := fmt.Sprintf("routine call, HTTP, %s", plural(n, "session"))
			r.add(target.name, name, "calls_per_s", tp.perSecond)
			r.add(target.name, name, "errors", float64(tp.errors))
		}
		for _, n := range []int{16, 200, 400} {
			sessions, err := srv.sessions(ctx, n)
			if err != nil {
				srv.stop()
				return err
			}
			res := fixedCalls(ctx, sessions, transfer, sz.transfers)
			name := fmt.Sprintf("small transfers, %d sessions", n)
			r.add(target.name, name, "calls_per_s", res.perSecond)
			r.add(target.name, name, "p99_ms", res.p99)
			r.add(target.name, name, "errors", float64(res.errors))
		}
		srv.stop()

		// stdio: one session, concurrent calls on it.
		st, err := startStdio(ctx, work, target.cmd)
		if err != nil {
			return fmt.Errorf("%s over stdio: %w", target.name, err)
		}
		lat, err = latency(ctx, st.session, get, sz.latencyCalls)
		if err != nil {
			st.stop()
			return err
		}
		r.add(target.name, "routine call, stdio, 1 caller", "p50_ms", lat.p50)
		r.add(target.name, "routine call, stdio, 1 caller", "p99_ms", lat.p99)
		for _, n := range []int{1, 16, 64} {
			sessions := make([]*sdk.ClientSession, n)
			for i := range sessions {
				sessions[i] = st.session
			}
			tp := throughput(ctx, sessions, get, sz.window)
			r.add(target.name, fmt.Sprintf("routine call, stdio, %s", plural(n, "caller")), "calls_per_s", tp.perSecond)
		}
		st.stop()
	}

	if want("approval") {
		if err := approvalLatency(ctx, r, work, cs, sz.approvals); err != nil {
			return fmt.Errorf("approval latency: %w", err)
		}
	}
	if want("memory") {
		if err := memory(ctx, r, work, cs, sz); err != nil {
			return err
		}
	}
	if want("micro") {
		if err := micro(r, root, sz.benchtime); err != nil {
			return err
		}
	}
	r.print(os.Stdout)
	raw, _ := json.MarshalIndent(r, "", "  ")
	return os.WriteFile(outPath, append(raw, '\n'), 0o644)
}

// countersign runs `countersign serve` on its embedded default with its own
// data directory and a free approver port.
func countersign(bin, dir, addr string, env []string) *exec.Cmd {
	args := []string{"serve"}
	if addr != "" {
		args = append(args, "--http", addr)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(countersignEnv(dir, freeAddr()), env...)
	return cmd
}

// countersignEnv points Countersign at dir, with its approver page on
// page (host:port), shown as localhost as WebAuthn wants.
func countersignEnv(dir, page string) []string {
	_, port, _ := net.SplitHostPort(page)
	return append(os.Environ(),
		"COUNTERSIGN_SERVER_DATA_DIR="+dir,
		"COUNTERSIGN_SERVER_LOG_LEVEL=warn",
		"COUNTERSIGN_APPROVAL_LISTEN="+page,
		"COUNTERSIGN_APPROVAL_PUBLIC_URL=http://localhost:"+port,
		// The per-agent caps protect against a runaway agent; here one
		// agent is the load on purpose.
		"COUNTERSIGN_LIMITS_CALLS_PER_SECOND=1000000",
		"COUNTERSIGN_LIMITS_CALL_BURST=1000000",
		"COUNTERSIGN_LIMITS_PENDING_PER_AGENT=100000",
		"COUNTERSIGN_LIMITS_PENDING_TOTAL=100000",
	)
}

// approvalLatency measures the machine's side of an approval: from the
// approver's tap reaching the page (the ceremony's begin and finish
// requests, signed by a software key) to the tool's result reaching the
// agent whose call waited. The human's time is not in it.
func approvalLatency(ctx context.Context, r *report, work, bin string, n int) error {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return err
	}
	page := freeAddr()
	_, port, _ := net.SplitHostPort(page)
	origin := "http://localhost:" + port
	env := countersignEnv(dir, page)
	srv, err := startHTTP(ctx, work, func(_, addr string) *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--http", addr)
		cmd.Env = env
		return cmd
	})
	if err != nil {
		return err
	}
	defer srv.stop()
	enroll := exec.Command(bin, "approvers", "enroll", "alice")
	enroll.Env = env
	link, err := enroll.Output()
	if err != nil {
		return fmt.Errorf("approvers enroll: %w", err)
	}
	key, err := approvaltest.NewKey("localhost", origin)
	if err != nil {
		return err
	}
	pg := approvaltest.NewPage(page, origin)
	if err := pg.Enroll(strings.TrimSpace(string(link)), key); err != nil {
		return err
	}
	// The page limits taps per client address; spread the approver's taps
	// over loopback addresses so the limit is not what is measured.
	var taps []*approvaltest.Page
	for i := range 64 {
		taps = append(taps, approvaltest.NewPageFrom(page, origin, net.IPv4(127, 0, 1, byte(i+1))))
	}
	d := make([]time.Duration, 0, n)
	for i := range n {
		// A payee the ledger does not know: each call needs a human, and
		// the amounts stay far below the daily sums that would need two.
		done := make(chan error, 1)
		var returned time.Time
		go func() {
			err := call{"transfer", map[string]any{"from": "operating", "to": fmt.Sprintf("Bench payee %d", i),
				"amount": 1, "currency": "USD"}}.do(ctx, srv.session)
			returned = time.Now()
			done <- err
		}()
		var id string
		for deadline := time.Now().Add(30 * time.Second); id == "" && time.Now().Before(deadline); {
			ids, err := pg.Pending()
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				id = ids[0]
				break
			}
			time.Sleep(time.Millisecond)
		}
		if id == "" {
			return errors.New("no request appeared on the page")
		}
		tap := time.Now()
		if _, err := taps[i%len(taps)].Decide(id, string(vocab.Approve), key); err != nil {
			return err
		}
		if err := <-done; err != nil {
			return fmt.Errorf("approved transfer: %w", err)
		}
		d = append(d, returned.Sub(tap))
	}
	l := percentiles(d)
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p50_ms", l.p50)
	r.add("countersign", fmt.Sprintf("approval, machine side, %d requests", n), "p99_ms", l.p99)
	return nil
}

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

// server is one process under test with a first client session.
type server struct {
	session  *sdk.ClientSession
	endpoint string
	cmd      *exec.Cmd
	extra    []*sdk.ClientSession
}

func (s *server) sessions(ctx context.Context, n int) ([]*sdk.ClientSession, error) {
	for len(s.extra) < n {
		cs, err := dial(ctx, s.endpoint)
		if err != nil {
			return nil, err
		}
		s.extra = append(s.extra, cs)
	}
	return s.extra[:n], nil
}

func (s *server) stop() {
	for _, cs := range s.extra {
		cs.Close()
	}
	if s.session != nil {
		s.session.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
		}
	}
}

func client() *sdk.Client {
	return sdk.NewClient(&sdk.Implementation{Name: "csbench", Version: "1"}, nil)
}

func dial(ctx context.Context, endpoint string) (*sdk.ClientSession, error) {
	return client().Connect(ctx, &sdk.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1}, nil)
}

func startHTTP(ctx context.Context, work string, mk func(dir, addr string) *exec.Cmd) (*server, error) {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return nil, err
	}
	addr := freeAddr()
	cmd := mk(dir, addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, endpoint: "http://" + addr + "/mcp"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs, err := dial(ctx, s.endpoint)
		if err == nil {
			s.session = cs
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("not serving after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startStdio(ctx context.Context, work string, mk func(dir, addr string) *exec.Cmd) (*server, error) {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return nil, err
	}
	cmd := mk(dir, "")
	cmd.Stderr = os.Stderr
	cs, err := client().Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, err
	}
	return &server{session: cs}, nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
	p99       float64
	errors    int64
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
				if c.do(ctx, s) != nil {
					failed.Add(1)
				}
				d[i] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return rate{perSecond: float64(n) / elapsed.Seconds(), p99: percentiles(d).p99, errors: failed.Load()}
}

// memory measures Countersign's resident set with calls waiting for a
// human (block mode) and with poll-mode requests left pending.
func memory(ctx context.Context, r *report, work, bin string, sz sizes) error {
	big := call{"transfer", map[string]any{"from": "operating", "to": "Acme Supplies", "amount": 20000, "currency": "USD"}}
	for _, m := range []struct {
		name string
		n    int
		env  []string
		poll bool
	}{
		{fmt.Sprintf("RSS, %d calls waiting for approval", sz.waiting), sz.waiting, nil, false},
		{fmt.Sprintf("RSS, %d poll-mode requests pending", sz.pending), sz.pending, []string{"COUNTERSIGN_TOOLS_TRANSFER_WAIT=poll"}, true},
	} {
		srv, err := startHTTP(ctx, work, func(dir, addr string) *exec.Cmd { return countersign(bin, dir, addr, m.env) })
		if err != nil {
			return err
		}
		idle := rss(srv.cmd.Process.Pid)
		sessions, err := srv.sessions(ctx, min(m.n, 50))
		if err != nil {
			srv.stop()
			return err
		}
		cctx, cancel := context.WithCancel(ctx)
		var started atomic.Int64
		var wg sync.WaitGroup
		// A block-mode call waits inside its request, so all n are in
		// flight at once. A poll-mode call returns at once: raise them
		// one per session at a time, so the figure is what holding n
		// pending requests costs, not what absorbing n simultaneous HTTP
		// requests does.
		inFlight := make(chan struct{}, m.n)
		if m.poll {
			inFlight = make(chan struct{}, len(sessions))
		}
		for i := range m.n {
			wg.Add(1)
			inFlight <- struct{}{}
			go func() {
				defer wg.Done()
				started.Add(1)
				big.do(cctx, sessions[i%len(sessions)])
				if m.poll {
					<-inFlight
				}
			}()
		}
		// Block-mode calls never return by themselves; wait until the
		// server holds them all (its pending count), then measure.
		waitPending(srv, m.n, 60*time.Second)
		r.add("countersign", m.name, "rss_mb", rss(srv.cmd.Process.Pid))
		r.add("countersign", m.name, "idle_rss_mb", idle)
		cancel()
		wg.Wait()
		srv.stop()
	}
	return nil
}

// waitPending gives the server time to raise n requests; the figure is
// read from its own process, not the client's.
func waitPending(s *server, n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, stable := 0.0, 0
	for time.Now().Before(deadline) && stable < 5 {
		time.Sleep(200 * time.Millisecond)
		now := rss(s.cmd.Process.Pid)
		if now == last {
			stable++
		} else {
			stable = 0
		}
		last = now
	}
}

func rss(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op`)

// micro runs the Go benchmarks that bound a call's cost.
func micro(r *report, root, benchtime string) error {
	for _, b := range []struct{ pkg, pattern string }{
		{"./bench", "."},
		{"./authz", "BenchmarkDecide$"},
		{"./audit", "BenchmarkAppend"},
	} {
		cmd := exec.Command("go", "test", "-run", "^$", "-bench", b.pattern, "-benchtime", benchtime, b.pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("go test -bench %s: %v\n%s", b.pkg, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if m := benchLine.FindStringSubmatch(line); m != nil {
				ns, _ := strconv.ParseFloat(m[3], 64)
				r.add("micro", strings.TrimPrefix(m[1], "Benchmark"), "us_per_op", ns/1000)
			}
		}
	}
	return nil
}

// report is every figure of one run.
type report struct {
	Machine map[string]string `json:"machine"`
	Started string            `json:"started"`
	Results []result          `json:"results"`
}

type result struct {
	Target   string  `json:"target"` // baseline | countersign | micro
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
}

func (r *report) add(target, scenario, metric string, v float64) {
	r.Results = append(r.Results, result{target, scenario, metric, v})
}

func (r *report) value(target, scenario, metric string) (float64, bool) {
	for _, x := range r.Results {
		if x.Target == target && x.Scenario == scenario && x.Metric == metric {
			return x.Value, true
		}
	}
	return 0, false
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "machine: %s, %s cores, %s\n\n", r.Machine["cpu"], r.Machine["cores"], r.Machine["go"])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tscenario\tmetric\t÷ baseline\tvalue\tbaseline")
	for _, x := range r.Results {
		if x.Target == "baseline" || x.Target == "micro" {
			continue
		}
		b, ok := r.value("baseline", x.Scenario, x.Metric)
		ratio := "-"
		if ok && b != 0 {
			ratio = fmt.Sprintf("%.2f×", x.Value/b)
		}
		base := "-"
		if ok {
			base = fmt.Sprintf("%.2f", b)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\n", x.Target, x.Scenario, x.Metric, ratio, x.Value, base)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "micro benchmark\tµs/op")
	for _, x := range r.Results {
		if x.Target == "micro" {
			fmt.Fprintf(tw, "%s\t%.2f\n", x.Scenario, x.Value)
		}
	}
	tw.Flush()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func machine() map[string]string {
	m := map[string]string{"cores": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the countersign module")
	}
	return filepath.Dir(mod), nil
}
