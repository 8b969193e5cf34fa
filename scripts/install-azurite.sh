#!/usr/bin/env bash
# Installs Azurite (the Azure Blob Storage emulator the Azure destination tests start on
# 127.0.0.1) from npm, outside the clone, once, and prints the path of its `azurite-blob`.
set -euo pipefail
dir="${S3REPL_NODE:-$HOME/.cache/s3repl/node}"
bin="$dir/node_modules/.bin/azurite-blob"
if [ ! -x "$bin" ]; then
  command -v npm >/dev/null || { echo "npm (Node.js) is required to install Azurite" >&2; exit 1; }
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-audit --no-fund --silent "azurite@3.37.0" >&2)
fi
echo "$bin"
