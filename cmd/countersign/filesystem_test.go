package main

// The gateway in front of a server nobody here wrote: the reference MCP
// filesystem server from npm, pinned in testdata/npm/package-lock.json and
// installed by scripts/test.sh.

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
)

// EnvFilesystemServer names the reference filesystem server's executable;
// scripts/test.sh sets it after installing the server.
const EnvFilesystemServer = "COUNTERSIGN_TEST_FILESYSTEM_SERVER"

// filesystemServer is the installed server's executable: from the
// environment, else where scripts/test.sh installs it.
func filesystemServer(t *testing.T) string {
	t.Helper()
	path := os.Getenv(EnvFilesystemServer)
	if path == "" {
		path = filepath.Join(repoRoot, "testdata", "npm", "node_modules", ".bin", "mcp-server-filesystem")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the reference MCP filesystem server is not installed (%v).\n"+
			"Run scripts/test.sh, which installs it, or: npm ci --prefix testdata/npm (Node.js 20 or later),\n"+
			"or set %s to its executable.", err, EnvFilesystemServer)
	}
	return path
}

func TestGatewayInFrontOfTheReferenceFilesystemServer(t *testing.T) {
	server := filesystemServer(t)
	// The server resolves its root's symbolic links; so do we, so that
	// the paths we send are inside what it allows.
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	plan := filepath.Join(root, "plan.txt")
	if err := os.WriteFile(plan, []byte("ship it on Friday\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProduct(t, func(c *config.Config) {
		c.Upstreams = []config.Upstream{{
			Name: "files", Prefix: "files__", Command: []string{server, root},
			ConnectTimeout: 60 * time.Second, Required: true,
		}}
		c.Tools["files__write_file"] = config.Tool{Level: "high", Approvers: []string{"alice"}}
	})
	page, key := enrollSoftKey(t, p)
	a := newAgent(t, p)

	t.Run("its tools are listed through Countersign", func(t *testing.T) {
		list, err := a.cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, tool := range list.Tools {
			names[tool.Name] = true
			if tool.Name == "files__write_file" && (tool.Annotations == nil || tool.Annotations.ReadOnlyHint) {
				t.Errorf("write_file annotations %+v: the upstream's own should come through", tool.Annotations)
			}
		}
		for _, want := range []string{"files__read_text_file", "files__write_file", "files__list_directory", "files__move_file"} {
			if !names[want] {
				t.Errorf("%s not listed; got %v", want, names)
			}
		}
	})

	t.Run("a read runs at once", func(t *testing.T) {
		res := servertest.CallTool(t, a.cs, "files__read_text_file", map[string]any{"path": plan})
		if res.IsError || !strings.Contains(servertest.ResultText(res), "ship it on Friday") {
			t.Fatalf("read_text_file: isError=%v %s", res.IsError, servertest.ResultText(res))
		}
	})

	t.Run("a write waits for a tap and runs once approved", func(t *testing.T) {
		out := filepath.Join(root, "approved.txt")
		call := a.start("files__write_file", map[string]any{"path": out, "content": "written after a tap"})
		_, id := a.approvalURL(t, 1, call)
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s before any approval: %v, want it absent", out, err)
		}
		if _, err := page.Decide(id, "approve", key); err != nil {
			t.Fatal(err)
		}
		if res := await(t, call); res.IsError {
			t.Fatalf("approved write_file: %s", servertest.ResultText(res))
		}
		if got, err := os.ReadFile(out); err != nil || string(got) != "written after a tap" {
			t.Fatalf("after approval %s holds %q (%v)", out, got, err)
		}
	})

	t.Run("a denied write never happens", func(t *testing.T) {
		out := filepath.Join(root, "denied.txt")
		call := a.start("files__write_file", map[string]any{"path": out, "content": "never"})
		_, id := a.approvalURL(t, 2, call)
		if _, err := page.Decide(id, "deny", key); err != nil {
			t.Fatal(err)
		}
		if res := await(t, call); !res.IsError || !strings.Contains(servertest.ResultText(res), "denied by alice") {
			t.Fatalf("denied write_file: isError=%v %s", res.IsError, servertest.ResultText(res))
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s after a denial: %v, want it absent", out, err)
		}
	})
}
