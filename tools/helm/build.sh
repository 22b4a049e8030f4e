#!/usr/bin/env bash
# Build Helm from its official Go module, pinned in this directory's go.mod (helm.sh/helm/v4).
# The binary is cached outside the repository, keyed by the Helm version and a hash of every
# input, and built only once:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/helm-v4.3.2-<hash>/bin/helm
# Prints the bin directory on stdout; build progress goes to stderr.
set -euo pipefail

HELM_VERSION=v4.3.2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"

# The cache key: everything that goes into the binary.
inputs_hash() {
  (cd "$HERE" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum -o -name build.sh \) |
    LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12
}
OUT="$CACHE/helm-$HELM_VERSION-$(inputs_hash)"
BIN="$OUT/bin"

if [[ -x "$BIN/helm" ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is required" >&2; exit 1; }
mkdir -p "$OUT"
# One builder at a time (a second caller waits for the first build).
exec 9>"$OUT/.build.lock"
flock 9
if [[ -x "$BIN/helm" ]]; then echo "$BIN"; exit 0; fi

TMP="$(mktemp -d "$OUT/.bin.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# What helm's own Makefile sets for a tagged release.
LDFLAGS="-s -w"
LDFLAGS+=" -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v4/internal/version.metadata="
LDFLAGS+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

echo "build.sh: building Helm $HELM_VERSION into $BIN (slow the first time)" >&2
start=$SECONDS
export GOTOOLCHAIN=local CGO_ENABLED=0
cd "$HERE"
go build -p "${AIENV_BUILD_JOBS:-2}" -mod=readonly -buildvcs=false -trimpath -ldflags "$LDFLAGS" \
  -o "$TMP/helm" helm.sh/helm/v4/cmd/helm >&2

[[ -x "$TMP/helm" ]] || { echo "build.sh: helm was not built" >&2; exit 1; }
chmod 755 "$TMP"
rm -rf "$BIN"
mv "$TMP" "$BIN"
trap - EXIT
echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$BIN"
