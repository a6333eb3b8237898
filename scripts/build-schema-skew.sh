#!/bin/sh
# Test builds of studio-node at the next schema revision, for the upgrade e2e suite
# (tests/e2e/tests/upgrades.rs): the same sources with the node's `schema-next` and
# `schema-next-incompatible` cargo features, copied to target/debug under the names the
# process kubelet maps the images local/studio-node-next:* and
# local/studio-node-next-incompatible:* to. Never shipped.
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
out=target/debug
build() { # feature, binary name, expected "schemaRevision,minCompatibleRevision"
  if [ -n "$1" ]; then
    $CARGO build -q -p studio-node --bin studio-node --features "$1"
    cp -f "$out/studio-node" "$out/$2.tmp" && mv -f "$out/$2.tmp" "$out/$2"
  else
    $CARGO build -q -p studio-node --bin studio-node
  fi
  got=$("$out/$2" --version --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print("%s,%s" % (v["schemaRevision"], v["minCompatibleRevision"]))')
  if [ "$got" != "$3" ]; then
    echo "build-schema-skew: $out/$2 reports revision,min-compatible $got, expected $3" >&2
    exit 1
  fi
}
build schema-next studio-node-next 2,1
build schema-next-incompatible studio-node-next-incompatible 2,2
# Last: the regular build again, so target/debug/studio-node is revision 1.
build "" studio-node 1,1
