#!/usr/bin/env bash
# A destination outage under load (issue 31): `s3repl run` replicating to two loopback
# SeaweedFS servers while the first is stopped with SIGTERM and started again on the same ports
# and data. The measuring program: tools/examples/outage.rs.
# Usage: scripts/outage.sh [--rate R] [--warmup S] [--outage S] [--after S] [--size BYTES]
# [--control] (the same schedule, the server left running).
# Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
cargo build --release -p s3repl-tools --bin s3repl --example outage --locked >&2
"$CARGO_TARGET_DIR/release/examples/outage" --s3repl "$CARGO_TARGET_DIR/release/s3repl" "$@"
