// Package fulldisk gives a test a small file system of its own that it
// can fill up and free again: a tmpfs the test mounts (tests run as root
// on the project's machines) and unmounts when it ends. A test of what the
// server does when writes fail needs the real failure (SQLITE_FULL from a
// real file), not an injected error.
package fulldisk

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Disk is a mounted tmpfs.
type Disk struct {
	Dir    string // the mount point
	filler string // the file that takes all free space, while Full
}

// Mount mounts a tmpfs of size bytes on a new directory and unmounts it
// when the test ends. It fails the test, saying why, when it cannot: a
// test of a full disk that skips proves nothing.
func Mount(t testing.TB, size int64) *Disk {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10)+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("fulldisk: cannot mount a tmpfs on %s (this test needs root, or CAP_SYS_ADMIN, to fill a disk of its own): %v: %s", dir, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		// Lazily: a server the test started may still hold files open
		// while its own cleanup runs after this one.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("fulldisk: umount %s: %v: %s", dir, err, bytes.TrimSpace(out))
		}
	})
	return &Disk{Dir: dir, filler: filepath.Join(dir, "filler")}
}

// Fill takes every free block of the disk, so that the next write that
// needs a new block fails with ENOSPC.
func (d *Disk) Fill(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(d.filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("fulldisk: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for size := len(buf); size > 0; {
		if _, err := f.Write(buf[:size]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fulldisk: fill: %v", err)
			}
			size /= 2 // the last blocks, one write at a time
		}
	}
	if free := d.Free(t); free != 0 {
		t.Fatalf("fulldisk: %d bytes still free after filling", free)
	}
}

// Release gives the space Fill took back.
func (d *Disk) Release(t testing.TB) {
	t.Helper()
	if err := os.Remove(d.filler); err != nil {
		t.Fatalf("fulldisk: release: %v", err)
	}
}

// Free is how many bytes the disk has free.
func (d *Disk) Free(t testing.TB) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.Dir, &st); err != nil {
		t.Fatalf("fulldisk: statfs: %v", err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
