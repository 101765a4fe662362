package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LockFile is the file in the data directory that a server holds locked
// for as long as it runs: two servers on one directory would each keep
// their own usage windows, pending caps and routine-call marks, so what
// one agent moved through each would never be added up. The lock is the
// kernel's (flock on unix, LockFileEx on Windows): it goes when the
// process does, however it ends, so a crash leaves no stale lock. The
// file stays; what it says matters only while it is locked.
const LockFile = "serve.lock"

// Holder is what the locking process writes into the lock file, for the
// message another one gets.
type Holder struct {
	PID    int       `json:"pid"`
	Since  time.Time `json:"since"`
	Listen []string  `json:"listen,omitempty"` // "approver page 127.0.0.1:8710", ...
	// Reloads counts the reloads asked of the server (SIGHUP) and Reload
	// says how the last one went, for countersign reload to report.
	Reloads int    `json:"reloads,omitempty"`
	Reload  string `json:"reload,omitempty"`
}

// DirLock is a held lock on a data directory.
type DirLock struct {
	f *os.File
}

// InUseError says that another process holds the lock: a second server
// must not start.
type InUseError struct {
	Dir    string
	Holder *Holder // nil when the file did not say (yet)
}

func (e *InUseError) Error() string {
	var who string
	switch h := e.Holder; {
	case h == nil:
		who = "another countersign serve"
	default:
		who = fmt.Sprintf("countersign serve (pid %d, since %s", h.PID, h.Since.UTC().Format(time.RFC3339))
		if len(h.Listen) > 0 {
			who += ", " + strings.Join(h.Listen, ", ")
		}
		who += ")"
	}
	return fmt.Sprintf("data directory %s is in use by %s; stop it first", e.Dir, who)
}

// LockDir takes the data directory's lock without waiting and writes h
// into the lock file. The directory must exist. While another process
// holds the lock it fails with an *InUseError naming that process.
func LockDir(dir string, h Holder) (*DirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock the data directory: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, &InUseError{Dir: dir, Holder: readHolder(path)}
		}
		return nil, fmt.Errorf("store: lock the data directory %s: %w", dir, err)
	}
	l := &DirLock{f: f}
	if err := l.Update(h); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Update rewrites what the lock file says about its holder (the listen
// addresses are known only once the listeners are open).
func (l *DirLock) Update(h Holder) error {
	b, err := json.Marshal(h)
	if err == nil {
		err = l.f.Truncate(0)
	}
	if err == nil {
		_, err = l.f.WriteAt(append(b, '\n'), 0)
	}
	if err != nil {
		return fmt.Errorf("store: write the data directory's lock file: %w", err)
	}
	return nil
}

// Close releases the lock.
func (l *DirLock) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// readHolder reads what the holder wrote; nil if it wrote nothing
// readable yet.
func readHolder(path string) *Holder {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var h Holder
	if json.Unmarshal(b, &h) != nil || h.PID == 0 {
		return nil
	}
	return &h
}
