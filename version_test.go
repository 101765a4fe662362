package countersign

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"golang.org/x/mod/semver"
)

func TestVersionIsSemver(t *testing.T) {
	v := Version()
	if !semver.IsValid(v) || semver.Canonical(v) != v || semver.Build(v) != "" {
		t.Fatalf("VERSION holds %q: want a canonical semantic version such as v0.1.0", v)
	}
}

// A release changes VERSION and CHANGELOG.md together: the version has its
// section, and it is the newest one below Unreleased.
func TestVersionInChangelog(t *testing.T) {
	data, err := os.ReadFile("CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "## [" + strings.TrimPrefix(Version(), "v") + "]"
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "## [") || strings.HasPrefix(line, "## [Unreleased]") {
			continue
		}
		if !strings.HasPrefix(line, want) {
			t.Fatalf("CHANGELOG.md's newest release is %q; VERSION says %s", line, Version())
		}
		return
	}
	t.Fatalf("CHANGELOG.md has no section %q", want)
}

func TestReadBuild(t *testing.T) {
	const rev = "82f3615c0ffee2b1d5b0aa5c2e4c6a8e0f1d2c3b"
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		info   *debug.BuildInfo
		linked string
		want   string
	}{
		{"no build info", nil, "", "countersign " + Version() + " (commit unknown)"},
		{"go build in a checkout", &debug.BuildInfo{GoVersion: "go1.26.8",
			Main:     debug.Module{Version: "(devel)"},
			Settings: settings("GOOS", "linux", "GOARCH", "arm64", "vcs.revision", rev, "vcs.modified", "false")},
			"", "countersign " + Version() + " (commit " + rev + ", go1.26.8 linux/arm64)"},
		{"uncommitted changes", &debug.BuildInfo{GoVersion: "go1.26.8",
			Settings: settings("vcs.revision", rev, "vcs.modified", "true")},
			"", "countersign " + Version() + " (commit " + rev + " with uncommitted changes, go1.26.8)"},
		{"go install at a commit", &debug.BuildInfo{GoVersion: "go1.26.8",
			Main: debug.Module{Version: "v0.1.1-0.20261207231300-82f3615c0ffe"}},
			"", "countersign " + Version() + " (commit 82f3615c0ffe, go1.26.8)"},
		{"go install of a release", &debug.BuildInfo{GoVersion: "go1.26.8",
			Main: debug.Module{Version: "v0.1.0"}},
			"", "countersign " + Version() + " (commit unknown, go1.26.8)"},
		{"linked commit, no VCS", &debug.BuildInfo{GoVersion: "go1.26.8"},
			rev, "countersign " + Version() + " (commit " + rev + ", go1.26.8)"},
		{"VCS stamp wins over the linked commit", &debug.BuildInfo{GoVersion: "go1.26.8",
			Settings: settings("vcs.revision", rev)},
			"0000", "countersign " + Version() + " (commit " + rev + ", go1.26.8)"},
	} {
		if got := readBuild(tc.info, tc.linked).String(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
