package audit

import "testing"

// BenchmarkPrepare is what Append does on the caller's goroutine for a
// routine call's entry: check it, and build the bytes that are hashed and
// stored (the writer only splices in seq, time and prev_hash).
//
//	go test -run XXX -bench Prepare -benchmem ./audit
func BenchmarkPrepare(b *testing.B) {
	i := 0
	for b.Loop() {
		i++
		e := benchEntry(i)
		if _, err := prepare(&e); err != nil {
			b.Fatal(err)
		}
	}
}
