#!/usr/bin/env bash
# Build the local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from the official Go modules pinned in
# this directory's go.mod. Binaries are cached outside the repository, keyed
# by version, and built only once:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/k8s-v1.36.3/bin/
# Prints the bin directory on stdout; build progress goes to stderr.
set -euo pipefail

K8S_VERSION=v1.36.3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"
OUT="$CACHE/k8s-$K8S_VERSION"
BIN="$OUT/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if have_all; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is required" >&2; exit 1; }
mkdir -p "$OUT"
# One builder at a time (a second `up` waits for the first build).
exec 9>"$OUT/.build.lock"
flock 9
if have_all; then echo "$BIN"; exit 0; fi

TMP="$(mktemp -d "$OUT/.bin.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

IFS=. read -r MAJOR MINOR _ <<<"${K8S_VERSION#v}"
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION"
  LDFLAGS+=" -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done

echo "build.sh: building Kubernetes $K8S_VERSION control plane into $BIN (slow the first time)" >&2
start=$SECONDS
cd "$HERE"
GOTOOLCHAIN=local CGO_ENABLED=0 go build -p "${AIENV_BUILD_JOBS:-2}" -mod=readonly -buildvcs=false -trimpath \
  -ldflags "$LDFLAGS" -o "$TMP/" \
  ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl >&2

for b in "${BINARIES[@]}"; do
  [[ -x "$TMP/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
done
chmod 755 "$TMP"
rm -rf "$BIN"
mv "$TMP" "$BIN"
trap - EXIT
echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$BIN"
