package countersign

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The demo files land with modes that keep secrets private and let the
// deploy script run, and a second start never overwrites what a person
// changed; it only puts back what is missing.
func TestInstallDemo(t *testing.T) {
	dir := t.TempDir()
	created, err := InstallDemo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != len(DemoFiles()) || len(created) < 4 {
		t.Fatalf("created %v of %v", created, DemoFiles())
	}
	for path, mode := range map[string]os.FileMode{
		"demo":                             0o700 | os.ModeDir,
		"demo/deploy.sh":                   0o700,
		"demo/secrets":                     0o700 | os.ModeDir,
		"demo/secrets/prod-db-password":    0o600,
		"demo/secrets/payments-api-key":    0o600,
		"demo/secrets/staging-db-password": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, path))
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode(), err, mode)
		}
	}
	changed := filepath.Join(dir, "demo", "secrets", "prod-db-password")
	os.WriteFile(changed, []byte("mine"), 0o600)
	os.Remove(filepath.Join(dir, "demo", "deploy.sh"))
	created, err = InstallDemo(dir)
	if err != nil || !slices.Equal(created, []string{filepath.Join(dir, "demo", "deploy.sh")}) {
		t.Errorf("second install created %v, %v", created, err)
	}
	if b, _ := os.ReadFile(changed); string(b) != "mine" {
		t.Error("a changed demo file was overwritten")
	}
}
