#!/usr/bin/env bash
# Installs checkov (PyPI, pinned) into a virtualenv cached outside the repository, once:
#   ${AIENV_CACHE:-$HOME/.cache/aienv}/checkov-<version>/bin/checkov
# Prints the bin directory on stdout; pip's progress goes to stderr.
set -euo pipefail
CHECKOV_VERSION=3.3.30
CACHE="${AIENV_CACHE:-$HOME/.cache/aienv}"
OUT="$CACHE/checkov-$CHECKOV_VERSION"
# .complete is written last: a virtualenv cannot be moved into place (its scripts name their
# interpreter by absolute path), so an interrupted install is recognised and redone.
if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT/bin"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.checkov-$CHECKOV_VERSION.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then echo "$OUT/bin"; exit 0; fi
rm -rf "$OUT"
python3 -m venv "$OUT"
"$OUT/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2
"$OUT/bin/checkov" --version >/dev/null
touch "$OUT/.complete"
echo "$OUT/bin"
