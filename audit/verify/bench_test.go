package verify

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/store/storetest"
	"github.com/countersign/countersign/vocab"
)

func FuzzVerify(f *testing.F) {
	key := seededKey(1)
	pub := pubText(key)
	db := storetest.Open(f, f.TempDir())
	l := openLog(f, db, key, audit.Options{Now: stepClock()})
	var exports [][]byte
	for _, e := range sampleEntries() {
		mustAppend(f, l, e)
		exports = append(exports, exportBytes(f, l, 0))
	}
	// Roots of every genuine checkpoint: nothing else may verify, since
	// the fuzzer cannot sign with the server key.
	roots := map[string]bool{}
	for _, exp := range exports {
		s, err := Export(bytes.NewReader(exp), pub, Options{})
		if err != nil {
			f.Fatal(err)
		}
		roots[fmt.Sprint(s.TreeSize, s.Root)] = true
		f.Add(exp)
	}
	f.Add([]byte(""))
	f.Add([]byte("{\"checkpoint\":\"\"}\n"))
	f.Add([]byte("{\"seq\":1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Export(bytes.NewReader(data), pub, Options{})
		if err != nil {
			return
		}
		if !roots[fmt.Sprint(s.TreeSize, s.Root)] {
			t.Fatalf("verified an export whose checkpoint the server never signed: %+v", s)
		}
		// An entry line may carry the server's own sig (the form of
		// exports before issue 27): the entry is still the one written.
		entries := data[:bytes.LastIndex(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))+1]
		var written []byte
		for line := range bytes.Lines(entries) {
			written = append(append(written, audit.ExportLine(bytes.TrimSuffix(line, []byte("\n")))...), '\n')
		}
		if !bytes.HasPrefix(exports[len(exports)-1], written) {
			t.Fatalf("verified entries the server never wrote:\n%s", data)
		}
	})
}

// benchVerify measures Verify of an export (entries authenticated by the
// signed checkpoint) and of the same export in its form before issue 27,
// with every entry's sig, each of which is checked: the cost that made
// exports drop them.
func benchVerify(b *testing.B, n int) {
	data := benchExport(b, n)
	pub := pubText(seededKey(1))
	for _, sigs := range []bool{false, true} {
		b.Run(fmt.Sprintf("entry-sigs=%v", sigs), func(b *testing.B) {
			data := data
			if sigs {
				data = withEntrySigs(b, data, seededKey(1))
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				s, err := Export(bytes.NewReader(data), pub, Options{})
				if err != nil || s.Entries != int64(n) {
					b.Fatal(err, s)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

func BenchmarkVerify(b *testing.B) { benchVerify(b, 100_000) }

// BenchmarkVerifyMillion is run by bench/audit.sh.
func BenchmarkVerifyMillion(b *testing.B) {
	if os.Getenv("AUDIT_BENCH_BIG") == "" {
		b.Skip("set AUDIT_BENCH_BIG=1 (bench/audit.sh does)")
	}
	benchVerify(b, 1_000_000)
}

// benchEntry is a routine call's entry as the guard appends it: its
// arguments already in RFC 8785 form (the guard canonicalises them once
// for the policy, the digest and the log).
func benchEntry(i int) audit.Entry {
	return audit.Entry{
		Kind: vocab.KindCallAllowed, Agent: "agent-1", Tool: "transfer", Decision: "low", Rule: "tools.transfer.base",
		Args: json.RawMessage(fmt.Sprintf(`{"amount":%d,"currency":"USD","memo":"invoice 2026-%06d","to":"Vendor %d"}`, i, i, i%97)),
	}
}

// benchExport builds (once per size, cached under the test temp dir
// or AUDIT_BENCH_DIR) an export of n entries.
var benchExports sync.Map

func benchExport(b *testing.B, n int) []byte {
	if v, ok := benchExports.Load(n); ok {
		return v.([]byte)
	}
	path := ""
	if dir := os.Getenv("AUDIT_BENCH_DIR"); dir != "" {
		path = fmt.Sprintf("%s/export-nosig-%d.jsonl", dir, n)
		if data, err := os.ReadFile(path); err == nil {
			benchExports.Store(n, data)
			return data
		}
	}
	db := storetest.Open(b, b.TempDir())
	l := openLog(b, db, seededKey(1), audit.Options{})
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := l.Append(context.Background(), benchEntry(int(i))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	data := exportBytes(b, l, 0)
	if path != "" {
		os.WriteFile(path, data, 0o644)
	}
	benchExports.Store(n, data)
	return data
}

// withEntrySigs gives an export the entry sigs exports carried before
// issue 27.
func withEntrySigs(b *testing.B, data []byte, key ed25519.PrivateKey) []byte {
	var out []byte
	for line := range bytes.Lines(data) {
		i := bytes.LastIndex(line, []byte(`,"hash":"`))
		if i < 0 || !bytes.HasPrefix(line, []byte(`{"seq"`)) {
			out = append(out, line...)
			continue
		}
		h, err := decodeHash(string(line[i+9 : i+9+64]))
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, line[:i+9+64+1]...)
		out = append(out, `,"sig":"`...)
		out = append(out, encodeSig(ed25519.Sign(key, h[:]))...)
		out = append(out, "\"}\n"...)
	}
	return out
}
