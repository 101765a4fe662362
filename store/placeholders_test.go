package store

import (
	"strconv"
	"strings"
	"testing"
)

func TestRewritePlaceholders(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT ?`, `SELECT $1`},
		{`INSERT INTO t (a, b, c) VALUES (?,?, ?)`, `INSERT INTO t (a, b, c) VALUES ($1,$2, $3)`},
		{`SELECT ? FROM t WHERE a = 'is it?' AND b = ?`, `SELECT $1 FROM t WHERE a = 'is it?' AND b = $2`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{`SELECT '\', ?`, `SELECT '\', $1`}, // standard strings: a backslash is text
		{`SELECT E'\'?', ?`, `SELECT E'\'?', $1`},
		{`SELECT e'a\\', ?`, `SELECT e'a\\', $1`},
		{`SELECT some'?', ?`, `SELECT some'?', $1`}, // not an E-string: the E ends a word
		{`SELECT "col?" FROM "t""?" WHERE x = ?`, `SELECT "col?" FROM "t""?" WHERE x = $1`},
		{"SELECT ? -- really?\n, ?", "SELECT $1 -- really?\n, $2"},
		{"SELECT ? -- to the end?", "SELECT $1 -- to the end?"},
		{`SELECT /* a ? /* nested ? */ still ? */ ?`, `SELECT /* a ? /* nested ? */ still ? */ $1`},
		{`SELECT $$a ? b$$, ?`, `SELECT $$a ? b$$, $1`},
		{`SELECT $fn$ ? $x$ ? $fn$, ?`, `SELECT $fn$ ? $x$ ? $fn$, $1`},
		{`SELECT a$b, ?`, `SELECT a$b, $1`},
		{`SELECT 'unterminated ?`, `SELECT 'unterminated ?`},
		{`SELECT ?, 2 - ?/3`, `SELECT $1, 2 - $2/3`},
		{`SELECT ?????????? , ?`, `SELECT $1$2$3$4$5$6$7$8$9$10 , $11`},
	} {
		got, n := rewritePlaceholders(c.in)
		if got != c.want {
			t.Errorf("rewrite(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
		if want := strings.Count(c.want, "$") - strings.Count(c.in, "$"); n != want {
			t.Errorf("rewrite(%q): %d parameters, want %d", c.in, n, want)
		}
	}
}

// FuzzRewritePlaceholders: the output is the input with some `?`
// replaced by $1..$n in order and nothing else changed, and text inside
// quotes and comments is never touched.
func FuzzRewritePlaceholders(f *testing.F) {
	for _, s := range []string{"", "?", "a = ? AND b = '?'", `E'\'?`, `"?"`, "-- ?\n?", "/* ? */ ?", "$$?$$", "$a$?$b$", "x$?"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, n := rewritePlaceholders(s)
		if got := alignedParams(t, s, out); got != n {
			t.Fatalf("rewrite(%q) = %q: %d parameters numbered, %d reported", s, out, got, n)
		}
		// Embedded in each kind of quoting, s comes out unchanged, and
		// the parameters around it are numbered 1 and 2.
		single := strings.ReplaceAll(s, "'", "''")
		double := strings.ReplaceAll(s, `"`, `""`)
		line := strings.ReplaceAll(s, "\n", " ")
		block := strings.NewReplacer("/*", "/ *", "*/", "* /").Replace(s)
		for block != strings.NewReplacer("/*", "/ *", "*/", "* /").Replace(block) {
			block = strings.NewReplacer("/*", "/ *", "*/", "* /").Replace(block)
		}
		dollar := strings.ReplaceAll(s, "$q$", "")
		for strings.Contains(dollar, "$q$") {
			dollar = strings.ReplaceAll(dollar, "$q$", "")
		}
		if strings.HasSuffix(dollar, "$q") {
			dollar += " "
		}
		for _, q := range []string{"'" + single + "'", `"` + double + `"`, "-- " + line + "\n", "/* " + block + " */", "$q$" + dollar + "$q$"} {
			in := "SELECT ?, " + q + ", ?"
			want := "SELECT $1, " + q + ", $2"
			if got, n := rewritePlaceholders(in); got != want || n != 2 {
				t.Fatalf("rewrite(%q)\n got %q (%d)\nwant %q", in, got, n, want)
			}
		}
	})
}

// alignedParams walks in and out together and returns how many `?` of
// in became $1, $2, ... in order in out; anything else that differs
// fails t.
func alignedParams(t *testing.T, in, out string) int {
	t.Helper()
	i, j, k := 0, 0, 0
	for i < len(in) && j < len(out) {
		if in[i] == out[j] {
			i++
			j++
			continue
		}
		p := "$" + strconv.Itoa(k+1)
		if in[i] != '?' || !strings.HasPrefix(out[j:], p) {
			t.Fatalf("rewrite(%q) = %q: differs at %d/%d", in, out, i, j)
		}
		k++
		i++
		j += len(p)
	}
	if i != len(in) || j != len(out) {
		t.Fatalf("rewrite(%q) = %q: lengths do not align", in, out)
	}
	return k
}

// BenchmarkRewritePlaceholders is what the rewriting adds to each
// statement sent to PostgreSQL.
func BenchmarkRewritePlaceholders(b *testing.B) {
	q := `INSERT INTO approval_requests (id, tool, args, state, created_at, expires_at, display, nonce)
		VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	for range b.N {
		rewritePlaceholders(q)
	}
}
