#!/usr/bin/env bash
# Webhook intake throughput (issue 28): `s3repl run` taking one event per delivery from many
# connections, beside the source's own HEAD rate at the same concurrency (each event costs one
# HEAD), on a loopback SeaweedFS; before it, `s3repl backfill` beside one bucket's listing, and
# `s3repl verify` (by the listings, and with --stamps) beside two buckets' listings at once.
# The measuring program: tools/examples/intake_load.rs.
# Usage: scripts/intake-load.sh [--events N] [--concurrency C]. Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
cargo build --release -p s3repl-tools --bin s3repl --example intake_load --locked >&2
"$CARGO_TARGET_DIR/release/examples/intake_load" --s3repl "$CARGO_TARGET_DIR/release/s3repl" "$@"
