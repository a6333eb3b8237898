#!/usr/bin/env bash
# `make images` (issue 10, part 2): builds the studio-node and studio-operator images from
# the repository's Dockerfile without a container engine, and pushes them to the local
# registry (scripts/registry-up.sh, 127.0.0.1:5050; started here if it is not running).
#
#  1. the release binaries (cargo build --release --locked; honours CARGO_TARGET_DIR),
#     copied into the small build context <target dir>/image-bin/; and, for the upgrade e2e
#     suite, studio-node at the next schema revision (the node's cargo features
#     `schema-next`: revision 2, min-compatible 1; `schema-next-incompatible`: 2, 2), built
#     first in the same target dir and kept as <target>/release/studio-node-next and
#     studio-node-next-incompatible (the regular build comes last, so release/studio-node is
#     revision 1 again), each in its own context <target>/image-bin-next[-incompatible]/
#     (its studio-node is the variant; the other two are hard links to image-bin's); and,
#     in the same regular build, the e2e suites' test program studio-testapp (tests/testapp;
#     same dependency features, checked with cargo tree), in its own context
#     <target>/image-testapp/;
#  2. the base image, the equivalent of gcr.io/distroless/cc-debian12:nonroot built from
#     Debian packages (libc6, libgcc-s1, ca-certificates) with buildah, pushed as
#     $REG/studio/base-cc-debian12:nonroot (and :nonroot-<key>). Cached: skipped when the
#     registry has the tag for the current package versions and recipe (the key);
#  3. `buildah bud --layers --build-arg BINARIES=prebuilt --build-arg BASE=<base by digest>
#     --target studio-node|studio-operator`, each checked (every library its binaries need
#     is in the image; `studio-node --version --json` runs in it as uid 65532 and reports the
#     expected schema revisions), pushed; the variants the same way from the stage
#     studio-node (same path and entrypoint), as $REG/studio/studio-node-next[-incompatible];
#     the test-only $REG/studio/studio-testapp from tests/testapp/Dockerfile (the same base,
#     uid 65532, entrypoint the binary; not a stage of the shipped Dockerfile), checked the
#     same way (its libraries; it starts as uid 65532);
#  4. the pushed digests, written to $STUDIO_IMAGES_ENV (default
#     $STUDIO_CLUSTER_DIR/images.env) as STUDIO_NODE_IMAGE=<registry>/studio/studio-node@sha256:...,
#     STUDIO_OPERATOR_IMAGE=..., STUDIO_NODE_NEXT_IMAGE=... and
#     STUDIO_NODE_NEXT_INCOMPATIBLE_IMAGE=..., STUDIO_TESTAPP_IMAGE=..., and printed.
#
# Reproducible: the base and the images are committed with --timestamp 0 (created time and
# every file's mtime in the layers), so the same packages and the same binaries give the
# same digests, also after the registry or buildah's storage was emptied.
# buildah keeps its storage (vfs driver) under $STUDIO_BUILDAH_ROOT (default
# ~/.cache/studio/buildah), nothing in /var/lib/containers. Needs root.
# Environment: CARGO, CARGO_TARGET_DIR, STUDIO_CLUSTER_DIR, STUDIO_IMAGE_TAG (default dev),
# STUDIO_BUILDAH_ROOT, STUDIO_IMAGES_ENV, STUDIO_IMAGES_NO_CARGO=1 (use the binaries already
# in the target dir, the variants and the testapp too if they are there), STUDIO_IMAGES_SKEW=0
# (no studio-node-next* variants). See docs/real-node.md.
set -euo pipefail
# shellcheck source=scripts/lib-cluster.sh
source "$(dirname "$0")/lib-cluster.sh"
# shellcheck source=scripts/lib-real-node.sh
source "$(dirname "$0")/lib-real-node.sh"
im_log() { echo "[images] $*" >&2; }
im_die() {
  echo "[images] error: $*" >&2
  exit 1
}
start_ns=$(date +%s%N)
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$repo/target}
CTX=$TARGET/image-bin
TAG=${STUDIO_IMAGE_TAG:-dev}
REG=$RN_REGISTRY
BASE_REPO=studio/base-cc-debian12
BASE_PKGS=(libc6 libgcc-s1 ca-certificates)
BUILDAH_ROOT=${STUDIO_BUILDAH_ROOT:-${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}/buildah}
ENV_OUT=${STUDIO_IMAGES_ENV:-$DIR/images.env}
BINS=(studio-node studio-operator kubectl-studio)
# The e2e suites' test program (tests/testapp): its own image, test-only.
TESTAPP=studio-testapp
TESTAPP_DOCKERFILE=$repo/tests/testapp/Dockerfile
SKEW=${STUDIO_IMAGES_SKEW:-1}
case $SKEW in 0 | 1) ;; *) im_die "STUDIO_IMAGES_SKEW is '$SKEW': 0 (no schema-skew variants) or 1 (the default)" ;; esac
# The schema-skew variants of studio-node (never shipped; for tests/e2e's upgrade suite):
# image name -> cargo feature; and every node image's "schemaRevision,minCompatibleRevision".
VARIANTS=(studio-node-next studio-node-next-incompatible)
declare -A FEATURE=([studio-node-next]=schema-next [studio-node-next-incompatible]=schema-next-incompatible)
declare -A WANT_REV=([studio-node]="1,1" [studio-node-next]="2,1" [studio-node-next-incompatible]="2,2")

[ "$(id -u)" = 0 ] || im_die "buildah (vfs storage, chroot) needs root here"
for tool in buildah docker-registry jq curl apt-get apt-cache dpkg-deb ldd chroot; do
  command -v "$tool" >/dev/null || im_die "missing '$tool' (scripts/install-deps.sh installs buildah docker-registry jq)"
done
bah() { buildah --root "$BUILDAH_ROOT/storage" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs "$@"; }
export BUILDAH_ISOLATION=chroot
mkdir -p "$BUILDAH_ROOT/tmp"
work=$(mktemp -d "$BUILDAH_ROOT/tmp/build.XXXXXX")
ctrs=()
cleanup() {
  local c
  for c in "${ctrs[@]}"; do bah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export TMPDIR=$work # buildah's own temporary files (layer blobs while pushing)

# retry N DESCRIPTION CMD...: runs CMD up to N times (5 s, 10 s, ... apart).
retry() {
  local n=$1 what=$2 i
  shift 2
  for ((i = 1; i <= n; i++)); do
    "$@" && return 0
    [ "$i" -lt "$n" ] || break
    im_log "$what failed (try $i of $n); retrying in $((5 * i)) s"
    sleep $((5 * i))
  done
  im_die "$what failed $n times (see the messages above; are Debian's package mirrors reachable? apt-get update)"
}

# ------------------------------------------------ the registry (started after the cargo build, below)
# manifest_digest REPO REF: the registry's digest of a manifest, or nothing.
manifest_digest() {
  { curl -sfI --noproxy "*" --max-time 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/$1/manifests/$2" || true; } | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2}'
}

# revisions FILE: "schemaRevision,minCompatibleRevision" of a `studio-node --version --json`.
revisions() { jq -r '"\(.schemaRevision),\(.minCompatibleRevision)"' "$1" 2>/dev/null || echo "unparsable"; }

# ------------------------------------------------ 1. the release binaries
# The regular build. The variants select the same packages (-p studio-operator too), so that
# cargo unifies the dependencies' features as for the shipped studio-node (with -p studio-node
# alone, x509-parser for one gets other features): they reuse its compiled dependencies and
# differ from it only by the node's schema feature.
# studio-testapp shares the regular build; it enables no other feature of a shared
# dependency (`cargo tree -e features` of the selection with and without it: the same), so
# the shipped binaries and the variants' dependencies stay what they were without it.
PLAIN=(build --release --locked -p studio-node -p studio-operator -p "$TESTAPP"
  --bin studio-node --bin studio-operator --bin kubectl-studio --bin "$TESTAPP")
if [ "${STUDIO_IMAGES_NO_CARGO:-0}" != 1 ]; then
  # The variants first: cargo writes every feature set of studio-node to release/studio-node
  # (each keeps its own artifacts under deps/, so a warm run only relinks), so each is copied
  # aside, and the regular build below comes last (also when a variant's build fails).
  if [ "$SKEW" = 1 ]; then
    for v in "${VARIANTS[@]}"; do
      t0=$(date +%s%N)
      im_log "cargo build --release --features studio-node/${FEATURE[$v]} --bin studio-node (-> $TARGET/release/$v)"
      CARGO_TARGET_DIR=$TARGET "$CARGO" build --release --locked -p studio-node -p studio-operator --bin studio-node \
        --features "studio-node/${FEATURE[$v]}" || {
        im_log "restoring the regular $TARGET/release/studio-node"
        CARGO_TARGET_DIR=$TARGET "$CARGO" "${PLAIN[@]}" >/dev/null 2>&1 || true
        im_die "cargo build --release --features studio-node/${FEATURE[$v]} failed (see above)"
      }
      cmp -s "$TARGET/release/studio-node" "$TARGET/release/$v" || {
        cp -p "$TARGET/release/studio-node" "$TARGET/release/$v.tmp" && mv -f "$TARGET/release/$v.tmp" "$TARGET/release/$v"
      }
      im_log "  $v in $(ms_since "$t0") ms"
    done
  fi
  t0=$(date +%s%N)
  im_log "cargo build --release (target dir $TARGET)"
  CARGO_TARGET_DIR=$TARGET "$CARGO" "${PLAIN[@]}" || im_die "cargo build --release failed (see above)"
  im_log "  release binaries in $(ms_since "$t0") ms"
fi
for b in "${BINS[@]}"; do
  [ -x "$TARGET/release/$b" ] || im_die "no $TARGET/release/$b (run without STUDIO_IMAGES_NO_CARGO=1)"
done
if [ "$SKEW" = 1 ]; then
  missing=""
  for v in "${VARIANTS[@]}"; do [ -x "$TARGET/release/$v" ] || missing="$missing $v"; done
  if [ -n "$missing" ]; then # only with STUDIO_IMAGES_NO_CARGO=1 (the cargo step writes them)
    im_log "no$missing in $TARGET/release (STUDIO_IMAGES_NO_CARGO=1): the schema-skew images are not built this time"
    SKEW=0
  fi
fi
NODES=(studio-node)
[ "$SKEW" = 0 ] || NODES+=("${VARIANTS[@]}")
TESTAPPS=("$TESTAPP") # empty when there is no binary (only with STUDIO_IMAGES_NO_CARGO=1)
if [ ! -x "$TARGET/release/$TESTAPP" ]; then
  im_log "no $TESTAPP in $TARGET/release (STUDIO_IMAGES_NO_CARGO=1): its image is not built this time"
  TESTAPPS=()
fi
# Each node binary must report its revisions (a variant built without its feature, or the
# regular binary left at a variant's revision, would otherwise ship under the wrong name).
for n in "${NODES[@]}"; do
  "$TARGET/release/$n" --version --json >"$work/version.json" || im_die "$TARGET/release/$n --version --json failed"
  got=$(revisions "$work/version.json")
  [ "$got" = "${WANT_REV[$n]}" ] || im_die "$TARGET/release/$n reports schemaRevision,minCompatibleRevision $got, expected ${WANT_REV[$n]} ($(cat "$work/version.json"); built with the wrong cargo features? run without STUDIO_IMAGES_NO_CARGO=1)"
done
# ctx_dir NAME: the build context of image NAME (studio-node, studio-operator: image-bin;
# studio-node-next*: image-bin-next*; studio-testapp: image-testapp).
ctx_dir() {
  case $1 in
    "$TESTAPP") echo "$TARGET/image-testapp" ;;
    studio-node-*) echo "$CTX-${1#studio-node-}" ;;
    *) echo "$CTX" ;;
  esac
}
# fill_ctx DIR NODE-BINARY: DIR holds exactly BINS, studio-node being NODE-BINARY. Copied only
# when changed, with its mtime: buildah's layer cache keys COPY by content and metadata, so an
# unchanged binary reuses the cached layer. A variant's context hard-links the other two from
# $CTX (filled first).
fill_ctx() {
  local dir=$1 node=$2 b f
  mkdir -p "$dir"
  cmp -s "$node" "$dir/studio-node" || cp -p "$node" "$dir/studio-node"
  for b in "${BINS[@]}"; do
    [ "$b" != studio-node ] || continue
    if [ "$dir" = "$CTX" ]; then
      cmp -s "$TARGET/release/$b" "$dir/$b" || cp -p "$TARGET/release/$b" "$dir/$b"
    else
      [ "$dir/$b" -ef "$CTX/$b" ] || ln -f "$CTX/$b" "$dir/$b"
    fi
  done
  for f in "$dir"/* "$dir"/.[!.]*; do # the context is exactly BINS
    [ -e "$f" ] || continue
    case " ${BINS[*]} " in *" ${f##*/} "*) ;; *) rm -rf "$f" ;; esac
  done
}
for n in "${NODES[@]}"; do fill_ctx "$(ctx_dir "$n")" "$TARGET/release/$n"; done
# The testapp's context: exactly its binary (copied only when changed, as above).
if [ "${#TESTAPPS[@]}" -gt 0 ]; then
  tctx=$(ctx_dir "$TESTAPP")
  mkdir -p "$tctx"
  cmp -s "$TARGET/release/$TESTAPP" "$tctx/$TESTAPP" || cp -p "$TARGET/release/$TESTAPP" "$tctx/$TESTAPP"
  for f in "$tctx"/* "$tctx"/.[!.]*; do
    if [ -e "$f" ] && [ "${f##*/}" != "$TESTAPP" ]; then rm -rf "$f"; fi
  done
fi

"$repo/scripts/registry-up.sh"

# ------------------------------------------------ 2. the base image
# The root filesystem of gcr.io/distroless/cc-debian12:nonroot, from the same Debian
# packages: glibc, libgcc_s, the CA bundle; root and nonroot (65532) in /etc/passwd and
# /etc/group, /home/nonroot, /tmp 1777. The key below covers the text of this function and
# of commit_base, so a change of the recipe rebuilds the base.
build_base() { # build_base ROOTFS DEBDIR
  local root=$1 debs=$2 d
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$root"; done
  rm -rf "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/lintian "$root"/usr/sbin/update-ca-certificates
  mkdir -p "$root"/etc/ssl/certs "$root"/home/nonroot "$root"/root "$root"/tmp "$root"/var/lib "$root"/usr/local/bin
  # What update-ca-certificates writes with the default /etc/ca-certificates.conf (every
  # mozilla/*.crt), without running it (it needs openssl and a shell).
  find "$root"/usr/share/ca-certificates/mozilla -name '*.crt' | LC_ALL=C sort | while read -r f; do
    cat "$f"
    [ -z "$(tail -c1 "$f")" ] || echo
  done >"$root"/etc/ssl/certs/ca-certificates.crt
  grep -q 'BEGIN CERTIFICATE' "$root"/etc/ssl/certs/ca-certificates.crt || im_die "no CA certificate in the ca-certificates package"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root"/etc/passwd
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$root"/etc/group
  printf '%s\n' 'hosts: files dns' 'passwd: files' 'group: files' >"$root"/etc/nsswitch.conf
  chown 0:0 "$root" "$root"/root
  chmod 0755 "$root"
  chmod 0700 "$root"/root
  chown 65532:65532 "$root"/home/nonroot
  chmod 0700 "$root"/home/nonroot
  chmod 1777 "$root"/tmp
}
# commit_base ROOTFS KEY VERSIONS: the image from the root filesystem, as
# $REG/$BASE_REPO:nonroot-KEY (also part of the key).
commit_base() {
  local rootfs=$1 key=$2 versions=$3 c mnt
  c=$(bah from --name "studio-base-$$" scratch)
  ctrs+=("$c")
  mnt=$(bah mount "$c")
  cp -a "$rootfs/." "$mnt/"
  bah umount "$c" >/dev/null
  bah config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label "org.opencontainers.image.description=Studio base: the equivalent of gcr.io/distroless/cc-debian12:nonroot, built from Debian packages" \
    --label "studio.cms.io/base-packages=$versions" --label "studio.cms.io/base-key=$key" \
    --os linux --arch amd64 "$c"
  bah commit --quiet --rm --timestamp 0 "$c" "$REG/$BASE_REPO:nonroot-$key" >/dev/null
  ctrs=()
}
versions=""
for p in "${BASE_PKGS[@]}"; do
  v=$(apt-cache show --no-all-versions "$p" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
  if [ -z "$v" ]; then
    im_log "apt-cache knows no version of $p: apt-get update"
    retry 3 "apt-get update" apt-get update -qq
    v=$(apt-cache show --no-all-versions "$p" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
    [ -n "$v" ] || im_die "Debian package $p not found (apt-cache show $p)"
  fi
  versions="$versions $p=$v"
done
versions=${versions# }
key=$( (echo "$versions"; declare -f build_base commit_base) | sha256sum | cut -c1-16)
base_digest=$(manifest_digest "$BASE_REPO" "nonroot-$key")
if [ -n "$base_digest" ]; then
  im_log "base $REG/$BASE_REPO:nonroot-$key is in the registry ($versions): not rebuilt"
else
  t0=$(date +%s%N)
  im_log "building the base image from $versions"
  mkdir -p "$work/debs" "$work/rootfs"
  # shellcheck disable=SC2086 # $versions: one pkg=version argument each
  (cd "$work/debs" && retry 3 "apt-get download $versions" apt-get download -q -o APT::Sandbox::User=root $versions)
  build_base "$work/rootfs" "$work/debs"
  commit_base "$work/rootfs" "$key" "$versions"
  bah tag "$REG/$BASE_REPO:nonroot-$key" "$REG/$BASE_REPO:nonroot"
  for t in "nonroot-$key" nonroot; do
    retry 3 "pushing $REG/$BASE_REPO:$t" bah push --quiet --tls-verify=false --digestfile "$work/base.digest" \
      "$REG/$BASE_REPO:$t" "docker://$REG/$BASE_REPO:$t"
  done
  base_digest=$(cat "$work/base.digest")
  rm -rf --one-file-system "$work/rootfs" "$work/debs"
  im_log "  base image built and pushed in $(ms_since "$t0") ms: $REG/$BASE_REPO@$base_digest"
fi
BASE_REF=$REG/$BASE_REPO@$base_digest

# ------------------------------------------------ 3. the images
# check_image IMAGE WANT-REVISIONS BINARY...: every shared library the binaries need (ldd on
# the host) must be in the image, and the binaries must start there (chroot, uid 65532);
# studio-node's `--version --json` must report WANT-REVISIONS ("schemaRevision,
# minCompatibleRevision"; - for the other images); studio-testapp must start (with PORT=x it
# exits at once, naming the bad PORT). Sets UNPACKED (the image's unpacked size in bytes).
check_image() {
  local img=$1 want=$2 c mnt b lib got missing=""
  shift 2
  c=$(bah from --pull=never --name "studio-check-$$" "$img")
  ctrs+=("$c")
  mnt=$(bah mount "$c")
  for b in "$@"; do
    for lib in $(ldd "$mnt$b" | awk '$1 !~ /^linux-vdso/ {print $1}'); do
      if [ "${lib#/}" != "$lib" ]; then
        [ -e "$mnt$lib" ] || missing="$missing $b:$lib"
      elif [ ! -e "$mnt/lib/x86_64-linux-gnu/$lib" ] && [ ! -e "$mnt/usr/lib/x86_64-linux-gnu/$lib" ]; then
        missing="$missing $b:$lib"
      fi
    done
  done
  [ -z "$missing" ] || im_die "$img lacks libraries its binaries need:$missing (add the Debian package to BASE_PKGS)"
  if [ -e "$mnt/usr/local/bin/studio-node" ]; then
    chroot --userspec=65532:65532 "$mnt" /usr/local/bin/studio-node --version --json >"$work/version.json" ||
      im_die "studio-node --version --json failed inside $img"
    im_log "  in the image: $(cat "$work/version.json")"
    got=$(revisions "$work/version.json")
    [ "$want" = - ] || [ "$got" = "$want" ] ||
      im_die "studio-node in $img reports schemaRevision,minCompatibleRevision $got, expected $want"
  fi
  if [ -e "$mnt/usr/local/bin/studio-operator" ]; then
    chroot --userspec=65532:65532 "$mnt" /usr/local/bin/studio-operator --help >/dev/null ||
      im_die "studio-operator --help failed inside $img"
    chroot --userspec=65532:65532 "$mnt" /usr/local/bin/kubectl-studio --help >/dev/null ||
      im_die "kubectl-studio --help failed inside $img"
  fi
  if [ -e "$mnt/usr/local/bin/studio-testapp" ]; then
    if PORT=x chroot --userspec=65532:65532 "$mnt" /usr/local/bin/studio-testapp 2>"$work/testapp.err" ||
      ! grep -q 'PORT="x"' "$work/testapp.err"; then
      im_die "studio-testapp did not start inside $img: $(cat "$work/testapp.err")"
    fi
  fi
  UNPACKED=$(du -sb "$mnt" | awk '{print $1}')
  bah umount "$c" >/dev/null
  bah rm "$c" >/dev/null
  ctrs=()
}
declare -A digest
BUD=(bud --quiet --layers --isolation chroot --tls-verify=false --timestamp 0
  --build-arg BINARIES=prebuilt --build-arg "BASE=$BASE_REF" -f "$repo/Dockerfile")
# The testapp's: its own Dockerfile (one stage, only BASE).
TESTAPP_BUD=(bud --quiet --layers --isolation chroot --tls-verify=false --timestamp 0
  --build-arg "BASE=$BASE_REF" -f "$TESTAPP_DOCKERFILE")
buildah_version=$(bah --version)
# NAME: the image $REG/studio/NAME, from the Dockerfile's stage studio-operator or (all the
# node images) studio-node, or (studio-testapp) from tests/testapp/Dockerfile, with the
# build context ctx_dir NAME.
for name in studio-node studio-operator "${NODES[@]:1}" "${TESTAPPS[@]}"; do
  t0=$(date +%s%N)
  img=$REG/studio/$name:$TAG
  ctx=$(ctx_dir "$name")
  if [ "$name" = "$TESTAPP" ]; then
    target=testapp
    dockerfile=$TESTAPP_DOCKERFILE
    files=("$TESTAPP")
    bud=("${TESTAPP_BUD[@]}")
  else
    target=studio-node
    [ "$name" != studio-operator ] || target=studio-operator
    dockerfile=$repo/Dockerfile
    files=("${BINS[@]}")
    bud=("${BUD[@]}" --target "$target")
  fi
  # Not rebuilt when its inputs are those of the last push and the registry still has that
  # digest under the tag (like the base): buildah 1.28 takes ~0.5 s per cached step, ~4 s per
  # image. The inputs: the bud arguments (the base by digest), buildah's version, the
  # Dockerfile, the context's files (content and mode; --timestamp 0 drops their mtimes),
  # the check.
  inputs=$( {
    printf '%s\n' "$name" "$target" "$img" "${bud[@]}" "$buildah_version" "${WANT_REV[$name]:--}"
    cat "$dockerfile"
    (cd "$ctx" && stat -L -c '%n %a' "${files[@]}" && sha256sum "${files[@]}")
    declare -f check_image revisions
  } | sha256sum | cut -c1-32)
  pstamp=$BUILDAH_ROOT/pushed/$name # "<inputs> <digest> <compressed KiB> <unpacked KiB>"
  pin="" pdigest="" pkib="" ukib=""
  [ ! -f "$pstamp" ] || read -r pin pdigest pkib ukib <"$pstamp"
  if [ "$pin" = "$inputs" ] && [ -n "$pdigest" ] && [ "$(manifest_digest "studio/$name" "$TAG")" = "$pdigest" ]; then
    digest[$name]=$pdigest
    im_log "  $img@$pdigest: same inputs as pushed, in the registry: not rebuilt ($pkib KiB compressed, $ukib KiB unpacked)"
    continue
  fi
  im_log "buildah bud -f ${dockerfile#"$repo"/} ($target) -t $img ${ctx#"$TARGET"/}"
  bah "${bud[@]}" -t "$img" "$ctx" >"$work/bud.log" 2>&1 ||
    { cat "$work/bud.log" >&2; im_die "buildah bud ($target, $name) failed (above)"; }
  # The check mounts a copy of the image (vfs): done once per image ID.
  id=$(bah images --no-trunc --format '{{.ID}}' "$img" | head -n1)
  stamp=$BUILDAH_ROOT/checked/$name # "<image ID> <unpacked bytes>"
  sid="" ssize=""
  [ ! -f "$stamp" ] || read -r sid ssize <"$stamp"
  if [ -n "$id" ] && [ "$sid" = "$id" ]; then
    UNPACKED=$ssize
    im_log "  image $(echo "${id#sha256:}" | cut -c1-12) unchanged: already checked"
  else
    case $target in
      studio-node) check_image "$img" "${WANT_REV[$name]}" /usr/local/bin/studio-node ;;
      studio-operator) check_image "$img" - /usr/local/bin/studio-operator /usr/local/bin/kubectl-studio ;;
      testapp) check_image "$img" - "/usr/local/bin/$TESTAPP" ;;
    esac
    mkdir -p "$BUILDAH_ROOT/checked"
    echo "$id $UNPACKED" >"$stamp"
  fi
  retry 3 "pushing $img" bah push --quiet --tls-verify=false --digestfile "$work/$name.digest" "$img" "docker://$img"
  digest[$name]=$(cat "$work/$name.digest")
  pushed=$(curl -sf --noproxy "*" --max-time 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/studio/$name/manifests/${digest[$name]}" | jq '[.config.size] + [.layers[].size] | add')
  im_log "  $img@${digest[$name]}: $((pushed / 1024)) KiB compressed as pushed, $((UNPACKED / 1024)) KiB unpacked ($(ms_since "$t0") ms)"
  mkdir -p "$BUILDAH_ROOT/pushed"
  echo "$inputs ${digest[$name]} $((pushed / 1024)) $((UNPACKED / 1024))" >"$pstamp"
done

mkdir -p "$(dirname "$ENV_OUT")"
cat >"$ENV_OUT.tmp" <<ENV
# written by scripts/build-images.sh $(date -u +%Y-%m-%dT%H:%M:%SZ); the registry lives as long as the real node
STUDIO_BASE_IMAGE=$BASE_REF
STUDIO_NODE_IMAGE=$REG/studio/studio-node@${digest[studio-node]}
STUDIO_OPERATOR_IMAGE=$REG/studio/studio-operator@${digest[studio-operator]}
ENV
# The schema-skew variants (STUDIO_NODE_NEXT_IMAGE, STUDIO_NODE_NEXT_INCOMPATIBLE_IMAGE).
for v in "${NODES[@]:1}"; do
  var=${v^^}
  echo "${var//-/_}_IMAGE=$REG/studio/$v@${digest[$v]}"
done >>"$ENV_OUT.tmp"
# The e2e suites' test program (test-only).
for t in "${TESTAPPS[@]}"; do echo "STUDIO_TESTAPP_IMAGE=$REG/studio/$t@${digest[$t]}"; done >>"$ENV_OUT.tmp"
mv "$ENV_OUT.tmp" "$ENV_OUT"
# buildah 1.28 leaves a working container behind for the instruction-less stage `binaries`
# (a full vfs copy of the binaries each run), and every changed binary leaves the previous
# layers as dangling images: remove both (the storage is this script's own). The next run
# redoes the COPY steps (about a second); the digests stay the same.
bah rm --all >/dev/null
bah rmi --prune >/dev/null 2>&1 || true
grep -v '^#' "$ENV_OUT"
im_log "images pushed in $(ms_since "$start_ns") ms; digests in $ENV_OUT"
