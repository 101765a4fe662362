#!/usr/bin/env bash
# Installs what Countersign's tests and benchmarks need on a fresh Debian
# machine with Go, and only what is missing: the browser tests drive a real
# headless Chromium, the witness tests a real litewitness with its
# ssh-agent, the PostgreSQL tests and benchmarks a throwaway cluster, the
# PKCS #11 signer's tests a SoftHSM token, and the gateway tests the
# reference MCP servers from npm. Never skip a test
# for a missing dependency: install it here or fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
	echo "deps.sh: installing Debian's chromium for the browser tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

# The witness tests run litewitness, whose key lives in an ssh-agent.
if ! command -v ssh-agent >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1 || ! command -v ssh-add >/dev/null 2>&1; then
	echo "deps.sh: installing Debian's openssh-client for the witness tests (ssh-agent)" >&2
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
	echo "deps.sh: installing Debian's postgresql for the PostgreSQL tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# audit/pkcs11key signs in a SoftHSM token (Debian's softhsm2); its tests
# fail, never skip, without it.
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
	echo "deps.sh: installing Debian's softhsm2 for the PKCS #11 signer's tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq softhsm2 >/dev/null
fi

# The gateway tests run the reference MCP filesystem server from npm, pinned
# with its dependencies in testdata/npm/package-lock.json (Node.js 20 or later);
# the block_for test drives the official TypeScript SDK client from there too.
if ! command -v npm >/dev/null 2>&1; then
	echo "deps.sh: installing Debian's nodejs and npm for the gateway tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -x testdata/npm/node_modules/.bin/mcp-server-filesystem ] || [ ! -f testdata/npm/node_modules/@modelcontextprotocol/sdk/package.json ]; then
	echo "deps.sh: installing the MCP filesystem server and the TypeScript SDK into testdata/npm (npm ci)" >&2
	npm ci --prefix testdata/npm --no-audit --no-fund >/dev/null
fi
