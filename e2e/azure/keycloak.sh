#!/usr/bin/env bash
# keycloak.sh — fetch and build Keycloak (the Entra stand-in) once, cached by version.
#
# Usage:   KC_HOME="$(e2e/azure/keycloak.sh | tail -n 1)"
#
# Fetches org.keycloak:keycloak-quarkus-dist:<version>:zip from Maven Central with `mvn`,
# unzips it to ${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}/keycloak/<version>-<options hash>/,
# and runs `kc.sh build --db=dev-file --cache=local --features=<features>` there once (local
# cache: no JGroups clustering sockets on every interface, as prod mode would open). Prints that Keycloak
# home as the LAST stdout line. flock-safe; the home counts only once its .complete marker
# exists.
#
# The cached home is treated as read-only: up.sh runs `kc.sh start --optimized` (which skips
# the build) from a per-state-dir overlay (own bin/, conf/, data/; lib/, providers/, themes/
# symlinked here). Do not run `kc.sh start-dev` from the cached home itself: start-dev always
# re-augments (about 80 s on a loaded 2-core machine) and writes lib/quarkus and data/ in place.
# Environment: KEYCLOAK_VERSION (default 26.7.3), KEYCLOAK_FEATURES
# (default client-auth-federated,kubernetes-service-accounts).
set -euo pipefail

VERSION="${KEYCLOAK_VERSION:-26.7.3}"
FEATURES="${KEYCLOAK_FEATURES:-client-auth-federated,kubernetes-service-accounts}"
log() { printf '[azure keycloak] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cache_root="${KEYWIRE_CACHE_DIR:-$HOME/.cache/keywire}"
BUILD_OPTS=(--db=dev-file --cache=local --features="$FEATURES")
fhash="$(printf '%s ' "${BUILD_OPTS[@]}" | sha256sum | cut -c1-8)"
dir="$cache_root/keycloak/$VERSION-$fhash"
home="$dir/keycloak-$VERSION"

if [[ -f "$dir/.complete" && -x "$home/bin/kc.sh" ]]; then
  echo "$home"; exit 0
fi

for t in mvn unzip java flock; do command -v "$t" >/dev/null || die "$t is required"; done
mkdir -p "$cache_root/keycloak"
exec 9>"$cache_root/keycloak/.$VERSION-$fhash.lock"
if ! flock -n 9; then
  log "another run is preparing $dir; waiting..."
  flock 9
fi
if [[ -f "$dir/.complete" && -x "$home/bin/kc.sh" ]]; then
  echo "$home"; exit 0
fi

t0=$SECONDS
dl="$cache_root/keycloak/dist"
zip="$dl/keycloak-quarkus-dist-$VERSION.zip"
mkdir -p "$dl"
if [[ ! -s "$zip" ]] || ! unzip -tq "$zip" >/dev/null 2>&1; then
  log "fetching org.keycloak:keycloak-quarkus-dist:$VERSION:zip with mvn"
  rm -f "$zip"
  mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
      -DoutputDirectory="$dl" >&2 || die "mvn could not fetch keycloak-quarkus-dist $VERSION"
  [[ -s "$zip" ]] || die "mvn did not produce $zip"
  log "fetched in $((SECONDS - t0))s"
fi

rm -rf "$dir"
mkdir -p "$dir"
t1=$SECONDS
unzip -q "$zip" -d "$dir" || { rm -rf "$dir"; die "unzip failed"; }
[[ -x "$home/bin/kc.sh" ]] || { rm -rf "$dir"; die "no $home/bin/kc.sh after unzip"; }
log "unzipped in $((SECONDS - t1))s; running kc.sh build ${BUILD_OPTS[*]}"
t2=$SECONDS
"$home/bin/kc.sh" build "${BUILD_OPTS[@]}" > "$dir/build.log" 2>&1 \
  || { tail -n 30 "$dir/build.log" >&2; rm -rf "$dir"; die "kc.sh build failed"; }
touch "$dir/.complete"
log "built in $((SECONDS - t2))s (total $((SECONDS - t0))s)"
echo "$home"
