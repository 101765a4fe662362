package main

import (
	"bytes"
	"strings"
	"testing"

	csroot "github.com/countersign/countersign"
	"github.com/countersign/countersign/config"
)

// The replicas group serves the default configuration with a usage rule
// on get_balance: it must still be found there, parse and validate, and
// read usage without ever raising the call.
func TestUsageRuleFitsTheDefaultConfiguration(t *testing.T) {
	b, err := withUsageRule(csroot.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b, "default with the usage rule")
	if err != nil {
		t.Fatal(err)
	}
	rules := c.Tools["get_balance"].Rules
	if len(rules) != 1 || !strings.Contains(rules[0].When, "usage.calls_10m") {
		t.Fatalf("get_balance's rules: %+v", rules)
	}
	if _, err := withUsageRule([]byte("tools:\n  get_balance:\n    level: high\n")); err == nil {
		t.Error("a configuration without the plain get_balance was changed anyway")
	}
}

// BenchmarkAppend's lines, as go test prints them, become the replicas
// table's figures: each sub-benchmark under its target, each metric of
// its own named, ns/op and other benchmarks left out.
func TestAppendFiguresReadsBenchmarkAppend(t *testing.T) {
	out := `goos: linux
BenchmarkAppend/sqlite-2         	     200	    246584 ns/op	      4123 appends/s
BenchmarkAppend/postgresql/replicas=1-2         	     200	    416763 ns/op	      2719 appends/s	        25.00 entries/batch	      6802 µs-hold/batch	      2296 µs-wait/batch
BenchmarkAppend/postgresql/replicas=3-2         	     200	    283235 ns/op	      5756 appends/s	        22.22 entries/batch	      3257 µs-hold/batch	      6301 µs-wait/batch
BenchmarkOther-2	1	5 ns/op	7 appends/s
PASS
`
	r := &report{}
	if n := appendFigures(r, out); n != 9 {
		t.Fatalf("found %d figures, want 9: %+v", n, r.Results)
	}
	for _, want := range []struct {
		target, metric string
		v              float64
	}{
		{onSQLite, "appends_per_s", 4123},
		{onOneReplica, "lock_wait_us_per_batch", 2296},
		{onReplicas, "appends_per_s", 5756},
		{onReplicas, "lock_hold_us_per_batch", 3257},
		{onReplicas, "entries_per_batch", 22.22},
	} {
		if v, ok := r.value(want.target, appendScenario, want.metric); !ok || v != want.v {
			t.Errorf("%s %s = %v (found %v), want %v", want.target, want.metric, v, ok, want.v)
		}
	}
	if _, ok := r.value(onSQLite, appendScenario, "lock_wait_us_per_batch"); ok {
		t.Error("SQLite got a lock wait it does not report")
	}

	// Printed in a table of their own, PostgreSQL beside SQLite with the
	// ratio, and not in the baseline's table, which like the micro
	// benchmarks' is left out when it has no figures.
	var b bytes.Buffer
	r.print(&b)
	if strings.Contains(b.String(), "÷ baseline") || strings.Contains(b.String(), "micro benchmark") {
		t.Errorf("tables with no figures are printed:\n%s", b.String())
	}
	main, table, ok := strings.Cut(b.String(), "scenario ")
	if !ok {
		t.Fatalf("no replicas table:\n%s", b.String())
	}
	if strings.Contains(main, appendScenario) {
		t.Errorf("the replicas' figures are in the baseline's table:\n%s", main)
	}
	if !strings.Contains(table, "4123.00") || !strings.Contains(table, "1.40×") {
		t.Errorf("the replicas table does not show SQLite's 4123/s and three replicas at 1.40× of it:\n%s", table)
	}
}
