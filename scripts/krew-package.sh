#!/usr/bin/env bash
# Packages kubectl-studio for krew: dist/kubectl-studio_linux_amd64.tar.gz and
# dist/studio.yaml (deploy/krew/studio.yaml.in with the version and the archive's
# sha256). Usage: scripts/krew-package.sh [path/to/kubectl-studio] (default: the
# release build, target/release/kubectl-studio).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/kubectl-studio}
dist=${DIST:-$here/dist}
[ -x "$bin" ] || { echo "krew-package: $bin not found (cargo build --release -p studio-operator --bin kubectl-studio)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
mkdir -p "$dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$bin" "$stage/kubectl-studio"
archive="$dist/kubectl-studio_linux_amd64.tar.gz"
tar -C "$stage" --owner=0 --group=0 --mtime=@0 -czf "$archive" kubectl-studio
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "s/@VERSION@/$version/g" -e "s/@SHA256@/$sha/" "$here/deploy/krew/studio.yaml.in" >"$dist/studio.yaml"
echo "$dist/studio.yaml"
