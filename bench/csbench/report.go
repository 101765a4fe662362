package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
)

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
	Target   string  `json:"target"` // baseline | countersign[ sync=normal] | countersign -also | micro | sqlite | postgresql, N replica(s)
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
	var calls, micro []result
	for _, x := range r.Results {
		switch {
		case x.Target == "micro":
			micro = append(micro, x)
		case x.Target != "baseline" && !onStore[x.Target]:
			calls = append(calls, x)
		}
	}
	ratio := func(x result, target string) string {
		if b, ok := r.value(target, x.Scenario, x.Metric); ok && b != 0 && x.Target != target {
			return fmt.Sprintf("%.2f×", x.Value/b)
		}
		return "-"
	}
	if len(calls) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "target\tscenario\tmetric\t÷ baseline\t÷ -also\tvalue\tbaseline")
		for _, x := range calls {
			base := "-"
			if b, ok := r.value("baseline", x.Scenario, x.Metric); ok {
				base = fmt.Sprintf("%.2f", b)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", x.Target, x.Scenario, x.Metric,
				ratio(x, "baseline"), ratio(x, alsoOf(x.Target)), x.Value, base)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(micro) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "micro benchmark\tµs/op")
		for _, x := range micro {
			fmt.Fprintf(tw, "%s\t%.2f\n", x.Scenario, x.Value)
		}
		tw.Flush()
	}
	r.printReplicas(w)
}

// onStore are the replicas group's targets, printed in a table of their
// own, PostgreSQL beside SQLite.
var onStore = map[string]bool{onSQLite: true, onOneReplica: true, onReplicas: true}

// printReplicas prints the replicas group: one row per figure, SQLite's
// value, then each PostgreSQL target's and its ratio to SQLite's.
func (r *report) printReplicas(w io.Writer) {
	type row struct{ scenario, metric string }
	var rows []row
	seen := map[row]bool{}
	for _, x := range r.Results {
		if k := (row{x.Scenario, x.Metric}); onStore[x.Target] && !seen[k] {
			seen[k] = true
			rows = append(rows, k)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tmetric\t%s\t%s\t÷ sqlite\t%s\t÷ sqlite\n", onSQLite, onOneReplica, onReplicas)
	for _, k := range rows {
		lite, hasLite := r.value(onSQLite, k.scenario, k.metric)
		cells := []string{k.scenario, k.metric, "-"}
		if hasLite {
			cells[2] = fmt.Sprintf("%.2f", lite)
		}
		for _, target := range []string{onOneReplica, onReplicas} {
			v, ok := r.value(target, k.scenario, k.metric)
			if !ok {
				cells = append(cells, "-", "-")
				continue
			}
			ratio := "-"
			if hasLite && lite != 0 {
				ratio = fmt.Sprintf("%.2f×", v/lite)
			}
			cells = append(cells, fmt.Sprintf("%.2f", v), ratio)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
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
