#!/usr/bin/env bash
# checkov over what aienv installs: the Helm chart rendered (default values, and with every
# optional object on), each kustomize overlay rendered, and the samples. Exits non-zero on any
# failed check. An accepted finding carries a `checkov.io/skip<N>: <CHECK>=<reason>` annotation
# on the object itself, so the reason travels with it.
#   KUBECTL=/path/to/kubectl tools/checkov/scan.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${KUBECTL:?KUBECTL must name a kubectl binary (kubectl kustomize renders the overlays)}"
checkov="$("$ROOT/tools/checkov/install.sh")/checkov"
helm="$("$ROOT/tools/helm/build.sh")/helm"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
chart="$ROOT/charts/aienv-operator"
"$helm" template aienv-operator "$chart" -n aienv-system >"$out/chart-default.yaml"
"$helm" template aienv-operator "$chart" -n aienv-system \
  --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
  --set metrics.dashboard.enabled=true >"$out/chart-all-on.yaml"
for overlay in "$ROOT"/manifests/overlays/*/; do
  "$KUBECTL" kustomize "$overlay" >"$out/overlay-$(basename "$overlay").yaml"
done
# The samples as users apply them: into a namespace of their choosing (`kubectl apply -n`).
mkdir "$out/samples-ns"
# (kustomize takes resource directories by relative path only)
printf 'namespace: aienv-samples\nresources: [%s]\n' \
  "$(realpath --relative-to="$out/samples-ns" "$ROOT/manifests/samples")" >"$out/samples-ns/kustomization.yaml"
"$KUBECTL" kustomize "$out/samples-ns" >"$out/samples.yaml"
rm -r "$out/samples-ns"
"$checkov" --quiet --compact --framework kubernetes --skip-download --directory "$out"
