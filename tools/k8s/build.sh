#!/usr/bin/env bash
# Build the local Kubernetes cluster's binaries from the official Go modules pinned in this
# directory's go.mod (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl), CoreDNS from tools/coredns, and our own node helpers (pause,
# local-provisioner). Binaries are cached outside the repository, keyed by the Kubernetes version
# and a hash of every input, and built only once:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/k8s-v1.36.3-<hash>/bin/
# Prints the bin directory on stdout; build progress goes to stderr.
set -euo pipefail

K8S_VERSION=v1.36.3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$(dirname "$HERE")"
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
  coredns pause local-provisioner)

# The cache key: everything that goes into a binary.
inputs_hash() {
  (cd "$TOOLS" && find k8s coredns -type f \( -name '*.go' -o -name go.mod -o -name go.sum -o -name build.sh \) |
    LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12
}
OUT="$CACHE/k8s-$K8S_VERSION-$(inputs_hash)"
BIN="$OUT/bin"

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

echo "build.sh: building Kubernetes $K8S_VERSION binaries into $BIN (slow the first time)" >&2
start=$SECONDS
export GOTOOLCHAIN=local CGO_ENABLED=0
GOFLAGS_BUILD=(-p "${AIENV_BUILD_JOBS:-2}" -mod=readonly -buildvcs=false -trimpath)
cd "$HERE"
go build "${GOFLAGS_BUILD[@]}" -ldflags "$LDFLAGS" -o "$TMP/" \
  ./cmd/etcd \
  ./cmd/pause \
  ./cmd/local-provisioner \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl >&2
(cd "$TOOLS/coredns" && go build "${GOFLAGS_BUILD[@]}" -ldflags "-s -w" -o "$TMP/coredns" .) >&2

for b in "${BINARIES[@]}"; do
  [[ -x "$TMP/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }
done
chmod 755 "$TMP"
rm -rf "$BIN"
mv "$TMP" "$BIN"
trap - EXIT
echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$BIN"
