package upstream_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	"github.com/countersign/countersign/tools/upstream"
	"github.com/countersign/countersign/tools/upstream/upstreamtest"
)

func names(cat *tools.Catalog) []string {
	var names []string
	for _, s := range cat.Specs() {
		names = append(names, s.Def.Name)
	}
	slices.Sort(names)
	return names
}

func reload(t *testing.T, m *upstream.Manager, ups ...config.Upstream) {
	t.Helper()
	r, err := m.Prepare(context.Background(), ups)
	if err != nil {
		t.Fatal(err)
	}
	r.Commit(nil)
}

// A reload adds an upstream (its tools appear), removes one (its tools go
// at once, its call under way gets its answer, a new call is refused
// saying why) and replaces a changed one (the same tools, from the new
// process); one that cannot start refuses the reload and changes nothing.
func TestReloadAddsRemovesAndReplacesUpstreams(t *testing.T) {
	a, aRecord := stdioUpstream(t, "a")
	b, _ := stdioUpstream(t, "b")
	m, cat := start(t, a)

	reload(t, m, a, b)
	if got := names(cat); !slices.Contains(got, "b__read_note") || !slices.Contains(got, "a__read_note") {
		t.Fatalf("after adding b: %v", got)
	}

	slowSpec, _ := cat.Lookup("a__slow")
	answer := make(chan error, 1)
	go func() {
		call, err := slowSpec.Prepare(context.Background(), map[string]any{"steps": 10, "step_ms": 100})
		if err == nil {
			var res *tools.Result
			res, err = slowSpec.Run(context.Background(), call)
			if err == nil && (res.MCP == nil || textOf(res.MCP) != "slow: completed 10 steps") {
				err = errors.New("slow answered " + textOf(res.MCP))
			}
		}
		answer <- err
	}()
	waitRecorded(t, aRecord, upstreamtest.EventCalled)
	reload(t, m, b) // a removed while its call runs
	if got := names(cat); slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, "a__") }) {
		t.Errorf("a's tools still offered after its removal: %v", got)
	}
	call, err := slowSpec.Prepare(context.Background(), map[string]any{"steps": 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = slowSpec.Run(context.Background(), call)
	var notSent *tools.NotSentError
	if !errors.As(err, &notSent) || !strings.Contains(err.Error(), "removed or replaced by a configuration reload") {
		t.Errorf("a new call to a removed upstream: %v", err)
	}
	if err := <-answer; err != nil {
		t.Errorf("the call under way when its upstream was removed: %v", err)
	}

	b2 := b
	b2.Env = map[string]string{}
	for k, v := range b.Env {
		b2.Env[k] = v
	}
	b2.Env["CHANGED"] = "1"
	oldRead, _ := cat.Lookup("b__read_note")
	reload(t, m, b2)
	newRead, ok := cat.Lookup("b__read_note")
	if !ok || newRead == oldRead {
		t.Fatalf("b__read_note after b changed: offered %v, the same spec %v", ok, newRead == oldRead)
	}
	if res, err := run(t, context.Background(), cat, "b__read_note", map[string]any{"name": "x"}); err != nil || res.IsError {
		t.Errorf("b__read_note from the replaced b: %v %+v", err, res)
	}

	before := names(cat)
	broken := config.Upstream{Name: "c", Prefix: "c__", Command: []string{"/nonexistent/mcp-server"}, ConnectTimeout: 5 * time.Second}
	if _, err := m.Prepare(context.Background(), []config.Upstream{b2, broken}); err == nil || !strings.Contains(err.Error(), "upstream c does not start") {
		t.Fatalf("a reload with an upstream that cannot start: %v", err)
	}
	if got := names(cat); !slices.Equal(got, before) {
		t.Errorf("a refused reload changed the tools: %v, before %v", got, before)
	}
	if res, err := run(t, context.Background(), cat, "b__read_note", map[string]any{"name": "x"}); err != nil || res.IsError {
		t.Errorf("b__read_note after a refused reload: %v %+v", err, res)
	}
}

// waitRecorded waits until the upstream has recorded event.
func waitRecorded(t *testing.T, record, event string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs, _ := upstreamtest.ReadRecord(record)
		if slices.ContainsFunc(recs, func(r upstreamtest.Record) bool { return r.Event == event }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream recorded no %s within 20s: %+v", event, recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pins hold across a reload: an upstream replaced by a reload is compared
// with the pins its predecessor made, so its unchanged tools stay offered
// and the tools it newly lists are held until an admin accepts them, as
// after a restart.
func TestReloadedUpstreamIsComparedWithItsPins(t *testing.T) {
	p := openPins(t)
	u, _ := stdioUpstream(t, "notes")
	m, cat := startPinned(t, u, p)
	if !offered(cat, "notes__read_note") {
		t.Fatal("read_note not offered on the first connection")
	}
	mutable := u
	mutable.Env = map[string]string{upstreamtest.EnvMutable: "1"}
	for k, v := range u.Env {
		mutable.Env[k] = v
	}
	reload(t, m, mutable)
	if !offered(cat, "notes__read_note") || !offered(cat, "notes__write_note") {
		t.Error("the replaced upstream's pinned tools are not offered")
	}
	if !held(cat, "notes__rug") || !held(cat, "notes__mutate") {
		t.Errorf("tools the replaced upstream newly lists: rug held %v, mutate held %v; want both held", held(cat, "notes__rug"), held(cat, "notes__mutate"))
	}
	if n := p.changesOf(t); n["notes__rug"] != 1 || n["notes__read_note"] != 0 {
		t.Errorf("tool.changed entries %v: want one for rug and none for read_note", n)
	}
}
