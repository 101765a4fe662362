#!/usr/bin/env bash
# Runs Countersign's whole test suite on a fresh Debian machine with Go.
# The browser tests drive a real headless Chromium, and the witness tests a
# real litewitness with its ssh-agent; install what is missing rather than
# skip them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
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
