package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/countersign/countersign"
)

// clearEnv unsets the test process's own COUNTERSIGN_ variables, so that
// only those a test sets are seen.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "") // restored after the test; empty is unset to viper
		}
	}
}

// A typo'd variable is reported with the setting it most likely meant, one
// that resembles no setting without a guess, and a setting the file and
// the defaults leave out is overridden rather than ignored.
func TestUnknownEnvironmentVariablesAreReported(t *testing.T) {
	clearEnv(t)
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("COUNTERSIGN_APPROVAL_TIMOUT", "1m")
	t.Setenv("COUNTERSIGN_DATA_DIR", "/srv/elsewhere")
	t.Setenv("COUNTERSIGN_TOOLS_TRANSFER_QUORUM", "1") // the default file sets no tool-level quorum there
	t.Setenv("COUNTERSIGN_APPROVAL_TIMEOUT", "")
	c, err := Parse(countersign.DefaultConfig(), Embedded)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"environment variable COUNTERSIGN_APPROVAL_TIMOUT is not a setting, so it is ignored; did you mean COUNTERSIGN_APPROVAL_TIMEOUT?",
		"environment variable COUNTERSIGN_DATA_DIR is not a setting, so it is ignored",
	}
	if !slices.Equal(c.Warnings, want) {
		t.Errorf("warnings\n  %q\nwant\n  %q", c.Warnings, want)
	}
	if q := c.Tools["transfer"].Quorum; q != 1 {
		t.Errorf("COUNTERSIGN_TOOLS_TRANSFER_QUORUM=1 left tools.transfer.quorum at %d", q)
	}
	if c.Approval.Timeout.String() != "5m0s" {
		t.Errorf("the typo changed approval.timeout to %s", c.Approval.Timeout)
	}

	clearEnv(t)
	t.Setenv("COUNTERSIGN_SERVER_WORKERS", "7")
	t.Setenv("COUNTERSIGN_CONFIG", "ignored-by-parse.yaml")
	if c, err = Parse(countersign.DefaultConfig(), Embedded); err != nil || len(c.Warnings) > 0 || c.Server.Workers != 7 {
		t.Errorf("known variables: %v, warnings %q, workers %d", err, c.Warnings, c.Server.Workers)
	}
}
