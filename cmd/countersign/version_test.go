package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/countersign/countersign"
)

// The binary TestMain built with go build prints the VERSION file's
// version, the Go version and, when go build stamped it, the commit it was
// built from; a binary linked with a commit (a build without .git, such as
// the container image's) prints that one.
func TestVersion(t *testing.T) {
	prefix := "countersign " + countersign.Version() + " (commit "
	out, errOut, code := cli(t, t.TempDir(), "version")
	if code != 0 || !strings.HasPrefix(out, prefix) || !strings.Contains(out, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+")") {
		t.Fatalf("version: exit %d %q %s", code, out, errOut)
	}
	if !strings.HasPrefix(out, prefix+"unknown") {
		head, err := exec.Command("git", "-C", repoRoot, "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("version names a commit (%q) but git rev-parse fails: %v", out, err)
		}
		if !strings.HasPrefix(out, prefix+strings.TrimSpace(string(head))) {
			t.Errorf("version %q: not the checkout's commit %s", out, head)
		}
	}

	const rev = "0123456789abcdef0123456789abcdef01234567"
	linked := filepath.Join(t.TempDir(), "countersign")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", linked,
		"-ldflags", "-X github.com/countersign/countersign.commit="+rev, ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	got, err := exec.Command(linked, "version").Output()
	if want := prefix + rev + ", " + runtime.Version(); err != nil || !strings.HasPrefix(string(got), want) {
		t.Errorf("linked commit: %q, %v; want %q…", got, err, want)
	}
}
