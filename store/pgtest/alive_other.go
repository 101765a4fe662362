//go:build !unix

package pgtest

// alive cannot tell here, so no cluster is taken for an orphan.
func alive(int) bool { return true }
