#!/usr/bin/env bash
# CI for the packaging: the release binaries in snapshot mode
# (scripts/release.sh), the systemd unit checked by systemd-analyze, and the
# container image built with podman from packaging/Dockerfile, run, and its
# /healthz answered from the container. It installs what it needs from
# Debian (podman, busybox-static, systemd) and runs as root or with sudo.
#
# No image registry can be reached from CI (Docker Hub, gcr.io, quay.io,
# ghcr.io and cgr.dev do not even resolve), so the Dockerfile's build stage
# runs on an image this script assembles from the host: its Go toolchain
# (statically linked) and Debian's static busybox for the shell. The
# Dockerfile itself is the one users build with golang:1.26 from Docker Hub.
# The machines' cgroups are hybrid (v1 controllers beside an empty cgroup2),
# which Debian 12's crun refuses ("cgroups in hybrid mode not supported"), so
# podman runs its containers, build steps included, with runc.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
	echo "package.sh: installing Debian's ${need[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "package.sh: release binaries (snapshot)" >&2
bash scripts/release.sh --snapshot
version=$(tr -d '[:space:]' <VERSION)
commit=$(git rev-parse HEAD)
host_bin=$(mktemp -d)
case "$(go env GOARCH)" in amd64 | arm64) ;; *) echo "package.sh: no release binary for $(go env GOARCH)" >&2; exit 1 ;; esac
tar -xzf dist/countersign_*_linux_"$(go env GOARCH)".tar.gz -C "$host_bin" --strip-components=1
cs="$host_bin/countersign"
(cd dist && sha256sum --check --quiet countersign_*_checksums.txt)
out=$("$cs" version)
case "$out" in
"countersign $version (commit $commit"*) echo "package.sh: $out" >&2 ;;
*) echo "package.sh: the release binary says $out; want $version and commit $commit" >&2; exit 1 ;;
esac

echo "package.sh: systemd unit" >&2
root=$(mktemp -d)
trap 'rm -rf "$root" "$host_bin"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp "$cs" "$root/usr/local/bin/countersign"
cp packaging/countersign.service "$root/etc/systemd/system/"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
# verify exits 0 on unknown keys and only warns: any word from it fails.
warnings=$(systemd-analyze verify --root="$root" countersign.service 2>&1) || { echo "$warnings" >&2; exit 1; }
if [ -n "$warnings" ]; then
	echo "package.sh: systemd-analyze verify:" >&2
	echo "$warnings" >&2
	exit 1
fi
# The sandbox's exposure is 1.3 of 10 ("OK"); fail if it grows past 2.
systemd-analyze security --offline=yes --root="$root" --threshold=20 countersign.service | tail -1 >&2

echo "package.sh: container image" >&2
podman() {
	if [ -n "$sudo" ]; then sudo podman --runtime runc "$@"; else command podman --runtime runc "$@"; fi
}
base="localhost/countersign-build-go:$(go env GOVERSION)"
if ! podman image exists "$base"; then
	rootfs=$(mktemp -d)
	mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/root" "$rootfs/etc/ssl/certs" "$rootfs/usr/local"
	chmod 1777 "$rootfs/tmp"
	cp /bin/busybox "$rootfs/bin/"
	for applet in sh mkdir chmod cp cat echo; do ln -s busybox "$rootfs/bin/$applet"; done
	cp -a "$(go env GOROOT)" "$rootfs/usr/local/go"
	cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
	tar -C "$rootfs" -cf - . | podman import \
		--change 'ENV PATH=/usr/local/go/bin:/bin' --change 'ENV GOTOOLCHAIN=local' - "$base" >/dev/null
	rm -rf "$rootfs"
fi
image="localhost/countersign:$version-ci"
# The host's module and build caches, which the release builds above just
# filled with the same packages built the same way (-trimpath, static), spare
# the build stage a download and a compile of its own.
podman build --quiet --format docker -f packaging/Dockerfile \
	--build-arg GO_IMAGE="$base" --build-arg COMMIT="$commit" --build-arg GOPROXY="$(go env GOPROXY)" \
	--volume "$(go env GOMODCACHE):/host/gomodcache" --build-arg GOMODCACHE=/host/gomodcache \
	--volume "$(go env GOCACHE):/host/gocache" --build-arg GOCACHE=/host/gocache \
	-t "$image" . >/dev/null

name="countersign-ci-$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18710)
# -i keeps stdin open: serve speaks MCP on it and ends when it closes.
# Root on these machines lacks CAP_SYS_RESOURCE, so runc cannot raise the
# container's limits to podman's defaults (EPERM setting RLIMIT_NOFILE, then
# RLIMIT_NPROC): ask for modest ones. Without systemd, podman cannot time
# the HEALTHCHECK (it logs that); podman healthcheck run runs it below.
podman run -d -i --name "$name" -p "127.0.0.1:$port:8710" \
	--ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --health-interval=disable "$image" >/dev/null
cleanup() {
	local rc=$?
	if [ $rc -ne 0 ]; then podman logs "$name" >&2 || true; fi
	podman rm -f "$name" >/dev/null 2>&1 || true
	rm -rf "$root" "$host_bin"
	exit $rc
}
trap cleanup EXIT
ok=false
for _ in $(seq 60); do
	if "$cs" healthcheck --url "http://127.0.0.1:$port/healthz" --timeout 2s >/dev/null 2>&1; then ok=true; break; fi
	sleep 0.5
done
if ! $ok; then
	echo "package.sh: the container's /healthz did not answer on 127.0.0.1:$port" >&2
	exit 1
fi
"$cs" healthcheck --url "http://127.0.0.1:$port/healthz" >&2
# Ready too: the database in the /data volume takes a write.
"$cs" healthcheck --url "http://127.0.0.1:$port/readyz" >&2
podman healthcheck run "$name" # the image's HEALTHCHECK, from inside it
user=$(podman inspect --format '{{.Config.User}}' "$name")
[ "$user" = "65532:65532" ] || { echo "package.sh: the container runs as $user" >&2; exit 1; }
out=$(podman exec "$name" countersign version)
case "$out" in
"countersign $version (commit $commit,"*) echo "package.sh: container: $out" >&2 ;;
*) echo "package.sh: the image's binary says $out; want $version and commit $commit" >&2; exit 1 ;;
esac
echo "package.sh: ok" >&2
