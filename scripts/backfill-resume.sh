#!/usr/bin/env bash
# A large backfill (issue 28: 100,000 small versions by default) SIGKILLed once it has listed
# half the bucket, resumed, and repeated from the start, on a loopback SeaweedFS; the log is
# then read back (every version exactly once). The measuring program:
# tools/examples/backfill_resume.rs.
# Usage: scripts/backfill-resume.sh [--objects N] [--concurrency C]. Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
cargo build --release -p s3repl-tools --bin s3repl --example backfill_resume --locked >&2
"$CARGO_TARGET_DIR/release/examples/backfill_resume" --s3repl "$CARGO_TARGET_DIR/release/s3repl" "$@"
