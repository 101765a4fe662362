// Package secrets is the backend of the read_secret and list_secrets tools:
// one regular file per secret in a directory, the file name being the
// secret's name.
//
// Names are checked against [NamePattern] before any file is touched (no
// path separators, no "..", no leading dot), and files are opened through
// an [os.Root], so neither a crafted name nor a symbolic link can reach
// outside the directory; symbolic links are refused altogether, and a
// secret larger than [MaxSize] is refused rather than cut. Each secret has
// a classification (public, internal, confidential, restricted) from the
// config, else the default one.
//
// Values are returned to the caller and nowhere else: this package never
// logs them, and a keyed [MACKey.Sum] of the value is what belongs in an
// audit record.
package secrets

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/countersign/countersign/config"
)

// MaxSize bounds a secret file, in bytes.
const MaxSize = 64 << 10

// NamePattern is what a secret name must match.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Errors callers can test with errors.Is.
var (
	ErrInvalidName = errors.New("invalid secret name")
	ErrNotFound    = errors.New("no such secret")
	ErrNotRegular  = errors.New("not a regular file")
	ErrTooLarge    = errors.New("secret too large")
)

// Store reads secrets from one directory.
type Store struct {
	root     *os.Root
	dir      string
	classes  map[string]string
	fallback string
}

// Open opens cfg.Dir; a relative directory is resolved against the working
// directory now. The directory must exist.
func Open(cfg config.Secrets) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("secrets: no directory configured")
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	s := &Store{root: root, dir: cfg.Dir, classes: map[string]string{}, fallback: cfg.DefaultClassification}
	if s.fallback == "" {
		s.fallback = "internal"
	}
	for _, c := range cfg.Classified {
		s.classes[c.Name] = c.Classification
	}
	return s, nil
}

// Close releases the directory.
func (s *Store) Close() error { return s.root.Close() }

// CheckName reports whether name is an acceptable secret name.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: %q contains a path separator", ErrInvalidName, name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: %q contains \"..\"", ErrInvalidName, name)
	case !NamePattern.MatchString(name):
		return fmt.Errorf("%w: %q does not match %s", ErrInvalidName, name, NamePattern)
	}
	return nil
}

// Classification returns the configured classification of name.
func (s *Store) Classification(name string) string {
	if c, ok := s.classes[name]; ok {
		return c
	}
	return s.fallback
}

// Info describes a secret without its value.
type Info struct {
	Name           string
	Classification string
	Exists         bool
}

// Stat describes name without reading it. A name that is invalid, or that
// is not a regular file in the directory, is an error.
func (s *Store) Stat(name string) (Info, error) {
	if err := CheckName(name); err != nil {
		return Info{}, err
	}
	info := Info{Name: name, Classification: s.Classification(name)}
	fi, err := s.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return info, nil
	case err != nil:
		return info, fmt.Errorf("secrets: %w", err)
	case !fi.Mode().IsRegular():
		return info, fmt.Errorf("secrets: %s: %w (%v)", name, ErrNotRegular, fi.Mode().Type())
	}
	info.Exists = true
	return info, nil
}

// List returns every secret in the directory, by name, without values.
// Files whose names are not valid secret names, and anything that is not a
// regular file, are left out.
func (s *Store) List() ([]Info, error) {
	dir, err := s.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer dir.Close()
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	var out []Info
	for _, e := range entries {
		if !e.Type().IsRegular() || CheckName(e.Name()) != nil {
			continue
		}
		out = append(out, Info{Name: e.Name(), Classification: s.Classification(e.Name()), Exists: true})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Secret is a secret's value with what may be recorded about it.
type Secret struct {
	Info
	Value []byte
}

// Read returns the secret called name. A single trailing newline, as
// editors leave it, is not part of the value.
func (s *Store) Read(name string) (Secret, error) {
	info, err := s.Stat(name)
	if err != nil {
		return Secret{}, err
	}
	if !info.Exists {
		return Secret{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	f, err := s.root.Open(name)
	if err != nil {
		return Secret{}, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	// Check the file actually opened, not what Stat saw a moment ago.
	fi, err := f.Stat()
	if err != nil {
		return Secret{}, fmt.Errorf("secrets: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Secret{}, fmt.Errorf("secrets: %s: %w", name, ErrNotRegular)
	}
	value, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return Secret{}, fmt.Errorf("secrets: %s: %w", name, err)
	}
	if len(value) > MaxSize {
		return Secret{}, fmt.Errorf("secrets: %s: %w: over %d bytes", name, ErrTooLarge, MaxSize)
	}
	if n := len(value); n > 0 && value[n-1] == '\n' {
		value = value[:n-1]
		if n := len(value); n > 0 && value[n-1] == '\r' {
			value = value[:n-1]
		}
	}
	return Secret{Info: info, Value: value}, nil
}
