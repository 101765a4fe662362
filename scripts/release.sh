#!/usr/bin/env bash
# Builds Countersign's release binaries into dist/: linux and darwin on amd64
# and arm64, each a static binary (CGO_ENABLED=0) in a .tar.gz with LICENSE,
# README.md and CHANGELOG.md, and one SHA-256 checksums file for them all.
# The version is the VERSION file's, which every build embeds; a release is
# built from its tag (git tag "$(cat VERSION)") in a clean tree.
#
#   bash scripts/release.sh              # a release: refuses a dirty tree or an untagged commit
#   bash scripts/release.sh --snapshot   # the same builds from any commit (CI), named ...-SNAPSHOT-<commit>
#
# The archives are reproducible: files sorted, owned by 0:0, dated at the
# commit, gzip without a name or time; go build -trimpath. Checking them:
#   sha256sum --check --ignore-missing countersign_<version>_checksums.txt
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot=false
case "${1:-}" in
--snapshot) snapshot=true ;;
"") ;;
*) echo "usage: $0 [--snapshot]" >&2; exit 2 ;;
esac

version=$(tr -d '[:space:]' <VERSION)
commit=$(git rev-parse HEAD)
date=$(git log -1 --format=%cI HEAD)
name=${version#v}
if $snapshot; then
	name="$name-SNAPSHOT-${commit:0:12}"
else
	if [ -n "$(git status --porcelain)" ]; then
		echo "release.sh: the tree has uncommitted changes; commit them, or build a --snapshot" >&2
		exit 1
	fi
	if [ "$(git rev-parse -q --verify "refs/tags/$version^{commit}" || true)" != "$commit" ]; then
		echo "release.sh: HEAD is not tagged $version (VERSION); tag it (git tag -s $version), or build a --snapshot" >&2
		exit 1
	fi
fi

dist=dist
rm -rf "$dist"
mkdir -p "$dist"
for target in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64; do
	goos=${target%/*} goarch=${target#*/}
	dir="countersign_${name}_${goos}_${goarch}"
	mkdir -p "$dist/$dir"
	# The commit is linked in as well: go build stamps it only in a clone
	# whose .git is a directory (not in a git worktree), and the stamp wins.
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath \
		-ldflags "-s -w -X github.com/countersign/countersign.commit=$commit" \
		-o "$dist/$dir/countersign" ./cmd/countersign
	cp LICENSE README.md CHANGELOG.md "$dist/$dir/"
	tar --sort=name --mtime="$date" --owner=0 --group=0 --numeric-owner \
		-C "$dist" -cf - "$dir" | gzip -n -9 >"$dist/$dir.tar.gz"
	rm -rf "${dist:?}/$dir"
	echo "release.sh: $dist/$dir.tar.gz" >&2
done
(cd "$dist" && sha256sum -- *.tar.gz >"countersign_${name}_checksums.txt")
cat "$dist/countersign_${name}_checksums.txt"
