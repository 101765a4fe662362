package storetest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// ReadOnlyView makes dir read-only for this process, as a copy kept by an
// auditor is, and returns the path to read it at: for root (tests run as
// root here, and permissions do not stop root) a read-only bind mount of
// dir, undone when the test ends; for another user, dir itself with its
// write permissions taken away.
func ReadOnlyView(t testing.TB, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		return dir
	}
	view := t.TempDir()
	if err := unix.Mount(dir, view, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(view, unix.MNT_DETACH) })
	if err := unix.Mount("", view, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", view, err)
	}
	if unix.Access(view, unix.W_OK) == nil {
		t.Fatalf("%s is still writable", view)
	}
	return view
}
