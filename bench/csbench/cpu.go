package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// alsoTarget names the -also binary's figures in the report.
const alsoTarget = "countersign -also"

// cpuPerCall is the server process's CPU time (user and system, from
// /proc) per call over n calls spread over the sessions, in µs. Unlike
// throughput it does not depend on how the client shares the machine's
// cores, so it compares two servers driven by the same client.
func cpuPerCall(ctx context.Context, s *server, sessions []*sdk.ClientSession, c call, n int) (float64, error) {
	pid := s.cmd.Process.Pid
	before, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	res := fixedCalls(ctx, sessions, c, n)
	after, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	if res.errors > 0 {
		return 0, fmt.Errorf("%d of %d calls failed", res.errors, n)
	}
	return float64((after - before).Microseconds()) / float64(n), nil
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
