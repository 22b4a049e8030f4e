#!/usr/bin/env bash
# Build Ollama (an embedding server MemoryStores can run, `embedding.server`) from its Go module,
# CPU only, for the test node's Ollama image and for seeding model volumes in tests:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/ollama-<version>-<hash>/bin/ollama
# Prints the bin directory on stdout; build progress goes to stderr. Built once (about ten
# minutes of C++ on 2 cores), keyed by the version and this script.
#
# Go module archives leave out every `vendor/` directory, and llama.cpp keeps its header-only
# dependencies in one: nlohmann/json and stb come from Debian's packages, miniaudio from the
# source archive of the PyPI package that ships the same header.
set -euo pipefail

OLLAMA_VERSION=v0.17.4
MINIAUDIO_SDIST=miniaudio==1.71
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"
KEY="$( (echo "$OLLAMA_VERSION $MINIAUDIO_SDIST"; cat "$HERE/build.sh") | sha256sum | cut -c1-12)"
OUT="$CACHE/ollama-$OLLAMA_VERSION-$KEY"
BIN="$OUT/bin"

log() { printf '[ollama] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -x $BIN/ollama ]]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || die "go is required"
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9
if [[ -x $BIN/ollama ]]; then echo "$BIN"; exit 0; fi

if [[ ! -f /usr/include/nlohmann/json_fwd.hpp || ! -f /usr/include/stb/stb_image.h ]]; then
  [[ $EUID -eq 0 ]] || die "needs nlohmann-json3-dev and libstb-dev: apt-get install them"
  log "apt-get install nlohmann-json3-dev libstb-dev g++"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nlohmann-json3-dev libstb-dev g++ >/dev/null
fi

TMP="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: -d "$TMP/sdist" "$MINIAUDIO_SDIST" >&2 ||
  die "downloading the $MINIAUDIO_SDIST source archive failed"
tar -xzf "$TMP"/sdist/*.tar.gz -C "$TMP/sdist"
header="$(find "$TMP/sdist" -path '*/miniaudio/miniaudio.h' | head -n 1)"
[[ -n $header ]] || die "no miniaudio/miniaudio.h in the $MINIAUDIO_SDIST archive"
rm -rf "$OUT/include"
mkdir -p "$OUT/include"
cp -r "$(dirname "$header")" "$OUT/include/miniaudio"

log "building ollama $OLLAMA_VERSION (CPU) into $BIN (slow the first time)"
start=$SECONDS
mkdir -p "$TMP/bin"
GOTOOLCHAIN=local CGO_ENABLED=1 CGO_CPPFLAGS="-I$OUT/include" GOBIN="$TMP/bin" \
  go install -p "${AIENV_BUILD_JOBS:-2}" -trimpath \
  -ldflags "-s -w -X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION#v}" \
  "github.com/ollama/ollama@$OLLAMA_VERSION" >&2 || die "go install failed"
rm -rf "$BIN"
mv "$TMP/bin" "$BIN"
log "built in $((SECONDS - start))s"
echo "$BIN"
