package upstreamtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// EnvFilesystemServer names the executable of the reference MCP filesystem
// server from npm (pinned in testdata/npm/package-lock.json); scripts/test.sh
// installs it and sets this variable.
const EnvFilesystemServer = "COUNTERSIGN_TEST_FILESYSTEM_SERVER"

// FilesystemServer returns the reference filesystem server's executable:
// from [EnvFilesystemServer], else where scripts/test.sh installs it in this
// checkout. The error says how to install it.
func FilesystemServer() (string, error) {
	path := os.Getenv(EnvFilesystemServer)
	if path == "" {
		_, here, _, _ := runtime.Caller(0)
		path = filepath.Join(filepath.Dir(here), "..", "..", "..", "testdata", "npm", "node_modules", ".bin", "mcp-server-filesystem")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("the reference MCP filesystem server is not installed (%v).\n"+
			"Run scripts/test.sh, which installs it, or: npm ci --prefix testdata/npm (Node.js 20 or later),\n"+
			"or set %s to its executable", err, EnvFilesystemServer)
	}
	return path, nil
}
