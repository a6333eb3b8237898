#!/usr/bin/env bash
# Fetches the Keycloak distribution (the identity provider the OIDC tests run) from
# Maven Central into the cache, once, checks it against Maven's sha1, and prints two
# lines: the Keycloak home and a JAVA_HOME with Java >= 21 (Keycloak 26 needs it).
set -euo pipefail
version=${KEYCLOAK_VERSION:-26.5.5}
cache=${STUDIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/studio}/keycloak
home="$cache/keycloak-$version"
mkdir -p "$cache"
if [ ! -x "$home/bin/kc.sh" ]; then
  base=https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/$version
  zip="$cache/keycloak-$version.zip"
  echo "[keycloak] fetching keycloak-quarkus-dist $version from Maven Central" >&2
  curl -sSf --retry 3 -o "$zip.part" "$base/keycloak-quarkus-dist-$version.zip"
  want=$(curl -sSf --retry 3 "$base/keycloak-quarkus-dist-$version.zip.sha1" | cut -c1-40)
  got=$(sha1sum "$zip.part" | cut -c1-40)
  [ "$want" = "$got" ] || { echo "[keycloak] sha1 mismatch: $got, Maven says $want" >&2; exit 1; }
  mv "$zip.part" "$zip"
  (cd "$cache" && unzip -q -o "$zip")
  rm -f "$zip"
fi
java_home=""
for j in "${JAVA_HOME:-}" /usr/lib/jvm/*; do
  [ -x "$j/bin/java" ] || continue
  major=$("$j/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${major:-0}" -ge 21 ]; then java_home=$j; break; fi
done
[ -n "$java_home" ] || { echo "[keycloak] no Java >= 21 found (set JAVA_HOME)" >&2; exit 1; }
echo "$home"
echo "$java_home"
