#!/usr/bin/env bash
# Writes a one-layer OCI image archive by hand (tar + JSON, no Docker engine, no
# builder): oci-image.sh OUT.tar NAME ROOTFS_DIR ENTRYPOINT_JSON [CMD_JSON]
#   OUT.tar          an OCI image layout in a tar (oci-layout, index.json, blobs/sha256)
#   NAME             the full reference, e.g. studio.local/pause:1 (stored as the
#                    io.containerd.image.name annotation: `ctr images import` uses it)
#   ROOTFS_DIR       becomes the image's only layer (uncompressed, reproducible: sorted,
#                    mtime 0, owner 0:0)
#   ENTRYPOINT_JSON  e.g. '["/pause"]'; CMD_JSON e.g. '["sh"]' (default null)
# Prints the manifest digest.
set -euo pipefail
out=$1 name=$2 rootfs=$3 entrypoint=$4 cmd=${5:-null}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"
blob() { # blob FILE: moves FILE into blobs/, prints its digest
  local d
  d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/blobs/sha256/$d"
  echo "$d"
}
size() { stat -c %s "$work/blobs/sha256/$1"; }

tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$work/layer.tar" .
layer=$(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Cmd":%s,"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/realnode/oci-image.sh"}]}' \
  "$entrypoint" "$cmd" "$layer" >"$work/config.json"
config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config" "$(size "$config")" "$layer" "$(size "$layer")" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$(size "$manifest")" "$name" "${name##*:}" >"$work/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$out" oci-layout index.json blobs
echo "sha256:$manifest"
