#!/usr/bin/env bash
# ArgoCD's own CRDs (Application, ApplicationSet, AppProject), taken from the argo-cd Go module
# at ARGOCD_VERSION through the Go module proxy, so a test can check aienv's Applications against
# the real schema. Cached outside the repository, keyed by the version:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/argocd-crds-<version>/*.yaml
# Prints that directory on stdout; progress goes to stderr.
set -euo pipefail

ARGOCD_VERSION=v3.5.7
MODULE=github.com/argoproj/argo-cd/v3
CRDS=(application-crd.yaml applicationset-crd.yaml appproject-crd.yaml)
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"
OUT="$CACHE/argocd-crds-$ARGOCD_VERSION"

have_all() {
  local f
  for f in "${CRDS[@]}"; do [[ -s $OUT/$f ]] || return 1; done
}
if have_all; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "crds.sh: go is required" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.argocd-crds.lock"
flock 9
have_all && { echo "$OUT"; exit 0; }

# A throwaway module cache: only three YAML files of the (large) module are kept.
modcache="$(mktemp -d)"
trap 'chmod -R u+w "$modcache" 2>/dev/null; rm -rf "$modcache"' EXIT
echo "[argocd] downloading $MODULE@$ARGOCD_VERSION for its CRDs" >&2
dir="$(cd "$modcache" && GOMODCACHE="$modcache" GOFLAGS=-mod=mod go mod download -json "$MODULE@$ARGOCD_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n $dir && -d $dir/manifests/crds ]] || { echo "crds.sh: $MODULE@$ARGOCD_VERSION has no manifests/crds" >&2; exit 1; }
tmp="$OUT.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
for f in "${CRDS[@]}"; do cp "$dir/manifests/crds/$f" "$tmp/$f"; done
rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "$OUT"
