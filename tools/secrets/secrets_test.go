package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/config"
)

func testStore(t *testing.T) (*Store, string) {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "secrets")
	must(t, os.Mkdir(dir, 0o700))
	must(t, os.WriteFile(filepath.Join(base, "outside"), []byte("OUTSIDE-VALUE"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "prod-db-password"), []byte("hunter2\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "api.key"), []byte("k-123"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, ".hidden"), []byte("dot"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "subdir"), 0o700))
	must(t, os.Symlink(filepath.Join(base, "outside"), filepath.Join(dir, "escape")))
	must(t, os.Symlink("../outside", filepath.Join(dir, "escape-relative")))
	must(t, os.Symlink("api.key", filepath.Join(dir, "alias")))
	s, err := Open(config.Secrets{
		Dir: dir, DefaultClassification: "internal",
		Classified: []config.Secret{{Name: "prod-db-password", Classification: "restricted"}},
	})
	must(t, err)
	t.Cleanup(func() { s.Close() })
	return s, base
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	s, _ := testStore(t)
	sec, err := s.Read("prod-db-password")
	must(t, err)
	if string(sec.Value) != "hunter2" || sec.Classification != "restricted" || !sec.Exists {
		t.Errorf("got %+v", sec)
	}
	sec, err = s.Read("api.key")
	must(t, err)
	if string(sec.Value) != "k-123" || sec.Classification != "internal" {
		t.Errorf("got %+v", sec)
	}
	if _, err := s.Read("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing secret: %v", err)
	}
}

func TestRefusesEscapes(t *testing.T) {
	s, base := testStore(t)
	tests := []struct {
		name string
		want error
	}{
		{"../outside", ErrInvalidName},
		{"..", ErrInvalidName},
		{"x/../../outside", ErrInvalidName},
		{filepath.Join(base, "outside"), ErrInvalidName},
		{"/etc/passwd", ErrInvalidName},
		{"subdir/x", ErrInvalidName},
		{`sub\x`, ErrInvalidName},
		{".hidden", ErrInvalidName},
		{"", ErrInvalidName},
		{"a\x00b", ErrInvalidName},
		{"name with space", ErrInvalidName},
		{strings.Repeat("a", 129), ErrInvalidName},
		{"escape", ErrNotRegular},
		{"escape-relative", ErrNotRegular},
		{"alias", ErrNotRegular},
		{"subdir", ErrNotRegular},
	}
	for _, tc := range tests {
		sec, err := s.Read(tc.name)
		if !errors.Is(err, tc.want) {
			t.Errorf("Read(%q) = %q, %v; want %v", tc.name, sec.Value, err, tc.want)
		}
		if strings.Contains(string(sec.Value), "OUTSIDE") {
			t.Errorf("Read(%q) leaked the file outside the directory", tc.name)
		}
		if _, err := s.Stat(tc.name); !errors.Is(err, tc.want) {
			t.Errorf("Stat(%q) err %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestRootRefusesSymlinkSwappedInAfterCheck(t *testing.T) {
	// Even past the name and Lstat checks, the os.Root refuses to follow a
	// link out of the directory.
	s, _ := testStore(t)
	if _, err := s.root.Open("escape"); err == nil {
		t.Error("os.Root followed a symlink out of the directory")
	}
}

func TestTooLarge(t *testing.T) {
	s, _ := testStore(t)
	must(t, os.WriteFile(filepath.Join(s.dir, "big"), make([]byte, MaxSize+1), 0o600))
	if _, err := s.Read("big"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("err %v, want ErrTooLarge", err)
	}
	must(t, os.WriteFile(filepath.Join(s.dir, "max"), make([]byte, MaxSize), 0o600))
	if _, err := s.Read("max"); err != nil {
		t.Errorf("a secret of exactly MaxSize: %v", err)
	}
}

func TestListHasNamesOnly(t *testing.T) {
	s, _ := testStore(t)
	list, err := s.List()
	must(t, err)
	var names []string
	for _, i := range list {
		names = append(names, i.Name+"="+i.Classification)
	}
	if got, want := strings.Join(names, ","), "api.key=internal,prod-db-password=restricted"; got != want {
		t.Errorf("List = %s, want %s", got, want)
	}
}

func TestShippedTestdata(t *testing.T) {
	s, err := Open(config.Secrets{Dir: "../../demo/secrets", DefaultClassification: "internal"})
	must(t, err)
	defer s.Close()
	list, err := s.List()
	must(t, err)
	if len(list) != 3 {
		t.Fatalf("demo/secrets holds %d secrets, want 3: %+v", len(list), list)
	}
	for _, i := range list {
		sec, err := s.Read(i.Name)
		must(t, err)
		if !strings.HasPrefix(string(sec.Value), "FAKE-") {
			t.Errorf("%s: sample secrets must be obviously fake", i.Name)
		}
	}
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"prod-db-password", "../x", "a/b", "..", ".x", "a..b", "/abs", "ok.key"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) != nil {
			return
		}
		if filepath.Base(name) != name || filepath.Clean(name) != name || filepath.IsAbs(name) || strings.HasPrefix(name, ".") {
			t.Fatalf("CheckName accepted %q", name)
		}
	})
}
