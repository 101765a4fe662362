#!/usr/bin/env bash
# Runs Countersign's whole test suite on a fresh Debian machine with Go.
# The browser tests drive a real headless Chromium, and the witness tests a
# real litewitness with its ssh-agent; install what is missing rather than
# skip them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
	echo "test.sh: installing Debian's chromium for the browser tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

# The witness tests run litewitness, whose key lives in an ssh-agent.
if ! command -v ssh-agent >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1 || ! command -v ssh-add >/dev/null 2>&1; then
	echo "test.sh: installing Debian's openssh-client for the witness tests (ssh-agent)" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-client >/dev/null
fi

# The PostgreSQL tests (store/pgtest) start a throwaway cluster with the
# server's initdb and pg_ctl, which Debian keeps off PATH, in
# /usr/lib/postgresql/NN/bin. COUNTERSIGN_TEST_PG points them at an existing
# server instead.
if [ -z "${COUNTERSIGN_TEST_PG:-}" ] && ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "test.sh: installing Debian's postgresql for the PostgreSQL tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# The gateway tests run the reference MCP filesystem server from npm, pinned
# with its dependencies in testdata/npm/package-lock.json (Node.js 20 or later);
# the block_for test drives the official TypeScript SDK client from there too.
if ! command -v npm >/dev/null 2>&1; then
	echo "test.sh: installing Debian's nodejs and npm for the gateway tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -x testdata/npm/node_modules/.bin/mcp-server-filesystem ] || [ ! -f testdata/npm/node_modules/@modelcontextprotocol/sdk/package.json ]; then
	echo "test.sh: installing the MCP filesystem server and the TypeScript SDK into testdata/npm (npm ci)" >&2
	npm ci --prefix testdata/npm --no-audit --no-fund >/dev/null
fi
export COUNTERSIGN_TEST_FILESYSTEM_SERVER="$PWD/testdata/npm/node_modules/.bin/mcp-server-filesystem"

go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
# The end-to-end suite (cmd/countersign: real serve processes, replicas on
# PostgreSQL, browsers) takes longer than go test's default 10 minutes on
# two busy cores; a hung test still fails, at 45 minutes.
go test -race -count=1 -timeout 45m ./... "$@"

# The suites of the packages that keep state again, on PostgreSQL: their
# shared test setup (store/storetest) opens a fresh PostgreSQL database
# per test instead of the SQLite file, and serve processes get a
# store.url.
COUNTERSIGN_TEST_STORE=postgres go test -race -count=1 -timeout 45m \
	./tools/ledger/... ./audit/... ./approval/... ./guard/... ./internal/daemon/... ./cmd/countersign/... "$@"
