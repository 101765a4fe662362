package countersign

import (
	_ "embed"
	"runtime/debug"
	"strings"

	"golang.org/x/mod/module"
)

// The release version lives in one place, the VERSION file at the root of
// the repository, embedded here: every build carries it however it is made
// (go build, go install, scripts/release.sh, the container image), and
// scripts read the same file. A release changes VERSION and CHANGELOG.md
// together (TestVersionInChangelog).
//
//go:embed VERSION
var versionFile string

// commit is the VCS revision for builds that have no VCS information of
// their own, such as a container build without .git: set it with
// -ldflags "-X github.com/countersign/countersign.commit=<hash>". The
// version itself is never set this way.
var commit string

// Version returns the release version, e.g. "v0.1.0".
func Version() string { return strings.TrimSpace(versionFile) }

// Build describes the running binary.
type Build struct {
	Version   string // the release version, from VERSION
	Commit    string // the VCS revision it was built from; "" when unknown
	Modified  bool   // the working tree had changes not committed
	GoVersion string // the Go toolchain that built it, e.g. "go1.26.8"
	Platform  string // GOOS/GOARCH, e.g. "linux/amd64"
}

// ReadBuild reports how this binary was built. The commit comes from the
// VCS stamp go build adds inside a checkout (vcs.revision, vcs.modified),
// else from the pseudo-version go install records for a module fetched at
// a commit (v0.1.1-0.20261207120000-82f3615c0ffe), else from the linker
// flag above.
func ReadBuild() Build {
	info, _ := debug.ReadBuildInfo()
	return readBuild(info, commit)
}

// readBuild reads info (nil when the binary carries none), with linked as
// the commit set at link time.
func readBuild(info *debug.BuildInfo, linked string) Build {
	b := Build{Version: Version(), Commit: linked}
	if info == nil {
		return b
	}
	b.GoVersion = info.GoVersion
	var goos, goarch string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		b.Platform = goos + "/" + goarch
	}
	if b.Commit == "" && module.IsPseudoVersion(info.Main.Version) {
		b.Commit, _ = module.PseudoVersionRev(info.Main.Version)
	}
	return b
}

// String is the one line `countersign version` prints, e.g.
// "countersign v0.1.0 (commit 82f3615c0ffe…, go1.26.8 linux/amd64)".
func (b Build) String() string {
	var parts []string
	switch {
	case b.Commit == "":
		parts = append(parts, "commit unknown")
	case b.Modified:
		parts = append(parts, "commit "+b.Commit+" with uncommitted changes")
	default:
		parts = append(parts, "commit "+b.Commit)
	}
	if b.GoVersion != "" {
		parts = append(parts, strings.TrimSpace(b.GoVersion+" "+b.Platform))
	}
	return "countersign " + b.Version + " (" + strings.Join(parts, ", ") + ")"
}
