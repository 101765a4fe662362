package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// alsoOf names the -also binary's target that runs as countersign target
// name does, with the same settings.
func alsoOf(name string) string {
	return strings.Replace(name, "countersign", "countersign -also", 1)
}

// cpuPerCall is the server process's CPU time (user and system, from
// /proc) per call over n calls spread over the sessions, in µs. Unlike
// throughput it depends little on how the client shares the machine's
// cores, so it compares two servers driven by the same client. It also
// returns the calls' rate.
func cpuPerCall(ctx context.Context, s *server, sessions []*sdk.ClientSession, c call, n int) (float64, rate, error) {
	pid := s.cmd.Process.Pid
	before, err := cpuTime(pid)
	if err != nil {
		return 0, rate{}, err
	}
	res := fixedCalls(ctx, sessions, c, n)
	after, err := cpuTime(pid)
	if err != nil {
		return 0, rate{}, err
	}
	if res.errors > 0 {
		return 0, rate{}, fmt.Errorf("%d of %d calls failed", res.errors, n)
	}
	return float64((after - before).Microseconds()) / float64(n), res, nil
}

// cpuTime is a process's utime+stime: fields 14 and 15 of /proc/PID/stat,
// in clock ticks.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// count fields after its closing one, which is field 3.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(clockTicks()), nil
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times.
func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}

// cpuRounds measures every target's server CPU per routine call at 16
// HTTP sessions, its throughput over those calls, and one session's p50
// latency, in rounds that take the targets in turn, all servers started
// first and only one loaded at a time; each figure is the median of its
// rounds. On a machine whose other load comes and goes, interleaving puts
// each server under about the same load, so their ratios hold better
// than figures measured one server after another.
func cpuRounds(ctx context.Context, r *report, work string, targets []target, c call, sz sizes) error {
	type running struct {
		srv                 *server
		sessions            []*sdk.ClientSession
		cpu, perSecond, p50 []float64
	}
	all := make([]*running, len(targets))
	defer func() {
		for _, x := range all {
			if x != nil {
				x.srv.stop()
			}
		}
	}()
	for i, t := range targets {
		srv, err := startHTTP(ctx, work, t.cmd)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		all[i] = &running{srv: srv}
		if all[i].sessions, err = srv.sessions(ctx, 16); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if _, err := latency(ctx, srv.session, c, 100); err != nil { // warm up
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for round := range sz.cpuRounds {
		// Each round starts with the next target, so none always follows
		// the same one.
		for j := range targets {
			i := (j + round) % len(targets)
			t, x := targets[i], all[i]
			us, res, err := cpuPerCall(ctx, x.srv, x.sessions, c, sz.cpuCalls)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			x.cpu = append(x.cpu, us)
			x.perSecond = append(x.perSecond, res.perSecond)
			lat, err := latency(ctx, x.srv.session, c, sz.cpuCalls/8)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			x.p50 = append(x.p50, lat.p50)
		}
	}
	for i, t := range targets {
		x := all[i]
		r.add(t.name, "routine call, HTTP, 16 sessions, interleaved", "server_cpu_us_per_call", median(x.cpu))
		r.add(t.name, "routine call, HTTP, 16 sessions, interleaved", "calls_per_s", median(x.perSecond))
		r.add(t.name, "routine call, HTTP, 1 session, interleaved", "p50_ms", median(x.p50))
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
