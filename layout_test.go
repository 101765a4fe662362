package countersign

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"

	"github.com/countersign/countersign/vocab"
)

// The layout's rules (README, Development: Layout; DESIGN.md, Packages and
// the one-way flow), checked on the source itself so that a change that
// breaks one fails here and says where. Only non-test code is held to
// them: tests may reach wherever they need to.

const (
	maxFileLines    = 700
	maxPackageLines = 4000
)

// badPackageNames say nothing of what a package does (STYLE.md).
var badPackageNames = []string{"util", "utils", "common", "helper", "helpers", "misc"}

// An importRule limits what the packages matching from import of this
// module's packages. Patterns: "x" is package x, "x/..." is x and every
// package below it, "..." is every package, "*test" is every test-helper
// package, named after its parent as httptest is (approval/approvaltest,
// store/storetest, ...). The root package is "".
type importRule struct {
	from   string
	except []string // importers the rule leaves out
	only   []string // with leaf: the only packages of ours it may import
	leaf   bool
	not    []string // packages of ours it must not import
	why    string
}

var importRules = []importRule{
	{from: "vocab", leaf: true, why: "the shared words: a leaf every package can import"},
	{from: "authzdetails", leaf: true, why: "the RFC 9396 detail types: a pure leaf that tools, ciba and approval import"},
	{from: "digest", leaf: true, only: []string{"vocab"}, why: "the action digest: a leaf that approval, audit and guard import"},
	{from: "audit", leaf: true, only: []string{"digest", "vocab"}, why: "audit imports nothing of ours but digest (and the shared words)"},
	{from: "audit/verify", leaf: true, only: []string{"audit", "attest", "digest", "vocab"}, why: "the offline verifier imports nothing of the server"},
	{from: "authz", leaf: true, only: []string{"config", "vocab"}, why: "authz imports nothing of ours but config types"},
	{from: "tools/...", not: []string{"guard", "approval/...", "authz", "server", "ciba"}, why: "tools do the work; they never decide or ask a human"},
	{from: "tools/...", except: []string{"tools/upstream/pinstore"}, not: []string{"audit/..."},
		why: "tools do the work and the guard records it; only pinstore records what happens to pinned upstream definitions"},
	{from: "server", not: []string{"approval/...", "authz", "audit/...", "ciba"}, why: "server reaches policy, approval and audit only through guard"},
	{from: "approval/...", not: []string{"guard", "server", "ciba", "tools/...", "authz"}, why: "approval gets the human for the guard; it never calls back up or sideways"},
	{from: "guard", not: []string{"server", "ciba"}, why: "transports hand calls to the guard, not the other way"},
	{from: "...", not: []string{"cmd/..."}, why: "cmd only wires; nothing imports it"},
	{from: "...", except: []string{"bench/...", "*test"}, not: []string{"*test"}, why: "test helpers are for tests and benchmarks, never for the product"},
}

// goPackage is one directory's non-test Go files.
type goPackage struct {
	path    string // relative to the module: "approval/page"; "" for the root
	names   []string
	files   []goFile
	imports map[string]string // package of ours -> a file importing it
}

type goFile struct {
	name  string // slash path relative to the module
	lines int
	ast   *ast.File
	fset  *token.FileSet
}

func (f goFile) line(n ast.Node) int { return f.fset.Position(n.Pos()).Line }

// loadModule parses every non-test .go file of the module rooted at dir,
// leaving out testdata, hidden directories and nested modules.
func loadModule(t *testing.T, dir string) map[string]*goPackage {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	module := modfile.ModulePath(gomod)
	fset := token.NewFileSet()
	pkgs := map[string]*goPackage{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
				name == "testdata" || name == "node_modules" || name == "vendor") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkgPath := path.Dir(rel)
		if pkgPath == "." {
			pkgPath = ""
		}
		pkg := pkgs[pkgPath]
		if pkg == nil {
			pkg = &goPackage{path: pkgPath, imports: map[string]string{}}
			pkgs[pkgPath] = pkg
		}
		if !slices.Contains(pkg.names, f.Name.Name) {
			pkg.names = append(pkg.names, f.Name.Name)
		}
		lines := strings.Count(string(src), "\n")
		if len(src) > 0 && src[len(src)-1] != '\n' {
			lines++
		}
		pkg.files = append(pkg.files, goFile{name: rel, lines: lines, ast: f, fset: fset})
		for _, spec := range f.Imports {
			imp, _ := strconv.Unquote(spec.Path.Value)
			if imp == module {
				pkg.imports[""] = rel
			} else if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
				pkg.imports[rest] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Fatal("no Go packages found")
	}
	return pkgs
}

// sorted returns the packages in import-path order, for stable reports.
func sorted(pkgs map[string]*goPackage) []*goPackage {
	var out []*goPackage
	for _, p := range pkgs {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *goPackage) int { return strings.Compare(a.path, b.path) })
	return out
}

func display(pkg string) string {
	if pkg == "" {
		return "(root)"
	}
	return pkg
}

// otherTestHelpers are test-helper packages not named after their parent.
var otherTestHelpers = map[string]bool{
	"identity/idptest": true, // the OpenID Provider of tests, for identity and the agent listener
}

// matches reports whether package pkg matches pattern (see importRule).
func matches(pattern, pkg string) bool {
	switch {
	case pattern == "...":
		return true
	case pattern == "*test":
		parent := path.Dir(pkg)
		return parent != "." && path.Base(pkg) == path.Base(parent)+"test" || otherTestHelpers[pkg]
	case strings.HasSuffix(pattern, "/..."):
		base := strings.TrimSuffix(pattern, "/...")
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchesAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return matches(p, pkg) })
}

// fileSizeProblems names every file over maxFileLines.
func fileSizeProblems(pkgs map[string]*goPackage) []string {
	var out []string
	for _, pkg := range sorted(pkgs) {
		for _, f := range pkg.files {
			if f.lines > maxFileLines {
				out = append(out, fmt.Sprintf("%s: %d lines, over %d: split it into files of one idea each", f.name, f.lines, maxFileLines))
			}
		}
	}
	return out
}

// packageSizeProblems names every package over maxPackageLines.
func packageSizeProblems(pkgs map[string]*goPackage) []string {
	var out []string
	for _, pkg := range sorted(pkgs) {
		total := 0
		for _, f := range pkg.files {
			total += f.lines
		}
		if total > maxPackageLines {
			out = append(out, fmt.Sprintf("package %s: %d lines of non-test Go, over %d: it does more than one job", display(pkg.path), total, maxPackageLines))
		}
	}
	return out
}

// nameProblems names every package whose directory or package clause is
// one of badPackageNames.
func nameProblems(pkgs map[string]*goPackage) []string {
	var out []string
	for _, pkg := range sorted(pkgs) {
		names := append([]string{path.Base(pkg.path)}, pkg.names...)
		slices.Sort(names)
		for _, name := range slices.Compact(names) {
			if slices.Contains(badPackageNames, name) {
				out = append(out, fmt.Sprintf("package %s is named %s, which says nothing of what it does", display(pkg.path), name))
			}
		}
	}
	return out
}

// importProblems names every import of ours that one of rules forbids.
func importProblems(pkgs map[string]*goPackage, rules []importRule) []string {
	var out []string
	for _, pkg := range sorted(pkgs) {
		var imports []string
		for imp := range pkg.imports {
			imports = append(imports, imp)
		}
		slices.Sort(imports)
		for _, r := range rules {
			if !matches(r.from, pkg.path) || matchesAny(r.except, pkg.path) {
				continue
			}
			for _, imp := range imports {
				if imp != pkg.path && ((r.leaf && !slices.Contains(r.only, imp)) || matchesAny(r.not, imp)) {
					out = append(out, fmt.Sprintf("%s imports %s (%s): %s", display(pkg.path), display(imp), pkg.imports[imp], r.why))
				}
			}
		}
	}
	return out
}

// kindLiteralProblems names every string literal outside vocab whose value
// is an audit entry kind: a second spelling that a rename would miss.
// (Levels and states are not checked so: their values are everyday words
// that other things are also called, such as metrics labels, notification
// events and CIBA poll statuses.)
func kindLiteralProblems(pkgs map[string]*goPackage) []string {
	kinds := map[string]bool{}
	for _, k := range vocab.Kinds() {
		kinds[string(k)] = true
	}
	var out []string
	for _, pkg := range sorted(pkgs) {
		if pkg.path == "vocab" {
			continue
		}
		for _, f := range pkg.files {
			ast.Inspect(f.ast, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				if s, err := strconv.Unquote(lit.Value); err == nil && kinds[s] {
					out = append(out, fmt.Sprintf("%s:%d: %q is an audit entry kind: use its vocab.Kind constant", f.name, f.line(lit), s))
				}
				return true
			})
		}
	}
	return out
}

func report(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

func TestLayoutFileSizes(t *testing.T)    { report(t, fileSizeProblems(loadModule(t, "."))) }
func TestLayoutPackageSizes(t *testing.T) { report(t, packageSizeProblems(loadModule(t, "."))) }
func TestLayoutPackageNames(t *testing.T) { report(t, nameProblems(loadModule(t, "."))) }

func TestLayoutImportsFlowOneWay(t *testing.T) {
	pkgs := loadModule(t, ".")
	for _, r := range importRules {
		if r.from != "..." && !slices.ContainsFunc(sorted(pkgs), func(p *goPackage) bool { return matches(r.from, p.path) }) {
			t.Errorf("import rule for %s matches no package: update it to the layout", r.from)
		}
	}
	report(t, importProblems(pkgs, importRules))
}

func TestLayoutEntryKindsAreSpelledOnce(t *testing.T) {
	report(t, kindLiteralProblems(loadModule(t, ".")))
}

// The rules above are only as good as the module they see.
func TestLayoutSeesTheModule(t *testing.T) {
	pkgs := loadModule(t, ".")
	for _, want := range []string{"", "approval", "approval/page", "audit/verify", "cmd/countersign", "guard", "server", "tools/upstream", "vocab"} {
		if pkgs[want] == nil {
			t.Errorf("package %s not found", display(want))
		}
	}
	if pkg := pkgs["server"]; pkg != nil && pkg.imports["guard"] == "" {
		t.Error("server's imports were not read: it imports guard")
	}
}

// The checks find what they look for, in a module made for the purpose:
// each rule broken once, and kept where it makes an exception; tests,
// testdata and nested modules are left alone.
func TestLayoutChecksFindWhatTheyLookFor(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	imports := func(pkg string, deps ...string) string {
		src := "package " + pkg + "\n\nimport (\n"
		for _, d := range deps {
			src += "\t_ \"example.com/m/" + d + "\"\n"
		}
		return src + ")\n"
	}
	write("go.mod", "module example.com/m\n\ngo 1.26\n")
	write("vocab/vocab.go", imports("vocab", "digest"))
	write("vocab/kinds.go", "package vocab\n\nconst K = \"call.allowed\"\n")
	write("digest/digest.go", imports("digest", "vocab"))
	write("audit/audit.go", imports("audit", "digest", "cmd/countersign"))
	write("server/server.go", imports("server", "guard", "approval"))
	write("server/server_test.go", imports("server", "authz", "approval"))
	write("guard/guard.go", imports("guard", "approval", "approval/approvaltest"))
	write("guard/kinds.go", "package guard\n\nvar (\n\tk = \"call.allowed\"\n\tfine = \"call\"\n)\n")
	write("approval/approval.go", imports("approval", "attest", "audit"))
	write("approval/approvaltest/a.go", imports("approvaltest", "store/storetest"))
	write("attest/attest.go", "package attest\n")
	write("store/storetest/s.go", "package storetest\n")
	write("tools/ledger/ledger.go", imports("ledger", "audit"))
	write("tools/upstream/pinstore/p.go", imports("pinstore", "audit"))
	write("cmd/countersign/main.go", imports("main", "server", "approval/approvaltest"))
	write("server/common/c.go", "package common\n")
	write("tools/x/x.go", "package helpers\n")
	write("testdata/bad/bad.go", imports("bad", "cmd/countersign"))
	write("nested/go.mod", "module example.com/nested\n")
	write("nested/n.go", imports("n", "cmd/countersign")+strings.Repeat("\n", 800))
	write("big/big.go", "package big\n"+strings.Repeat("\n", maxFileLines))
	for i := range maxPackageLines/maxFileLines + 1 {
		write(fmt.Sprintf("huge/f%d.go", i), "package huge\n"+strings.Repeat("\n", maxFileLines-1))
	}
	pkgs := loadModule(t, dir)

	// Each problem up to its reason, which the rules' tables word.
	upTo := func(sep string, problems []string) []string {
		var out []string
		for _, p := range problems {
			before, _, _ := strings.Cut(p, sep)
			out = append(out, before)
		}
		return out
	}
	for _, tc := range []struct {
		check string
		got   []string
		want  []string
	}{
		{"file sizes", upTo(":", fileSizeProblems(pkgs)), []string{"big/big.go"}},
		{"package sizes", upTo(":", packageSizeProblems(pkgs)), []string{"package huge"}},
		{"names", nameProblems(pkgs), []string{
			"package server/common is named common, which says nothing of what it does",
			"package tools/x is named helpers, which says nothing of what it does",
		}},
		{"imports", upTo("): ", importProblems(pkgs, importRules)), []string{
			"audit imports cmd/countersign (audit/audit.go",
			"audit imports cmd/countersign (audit/audit.go",
			"cmd/countersign imports approval/approvaltest (cmd/countersign/main.go",
			"guard imports approval/approvaltest (guard/guard.go",
			"server imports approval (server/server.go",
			"tools/ledger imports audit (tools/ledger/ledger.go",
			"vocab imports digest (vocab/vocab.go",
		}},
		{"kinds", kindLiteralProblems(pkgs), []string{
			`guard/kinds.go:4: "call.allowed" is an audit entry kind: use its vocab.Kind constant`,
		}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.check, tc.got, tc.want)
		}
	}
}
