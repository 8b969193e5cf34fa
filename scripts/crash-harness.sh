#!/usr/bin/env bash
# The long crash and restart harness (issue 25): `s3repl run` against SeaweedFS and a local
# destination, 30 SIGKILLs at random moments, 10 clean restarts with a backlog appended while
# stopped, 5 torn tails cut after a kill; then every destination is compared with the source.
# The short version runs in the test suite. A failing run prints its seed; replay it with
# S3REPL_HARNESS_SEED=<seed> scripts/crash-harness.sh.
# Usage: scripts/crash-harness.sh [KILLS] [CLEAN] [TORN] [OPS_PER_PHASE]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
export S3REPL_HARNESS_KILLS="${1:-30}" S3REPL_HARNESS_CLEAN="${2:-10}" S3REPL_HARNESS_TORN="${3:-5}"
export S3REPL_HARNESS_OPS="${4:-300}"
cargo test --release -p s3repl-tools --test crash_harness --locked -- --nocapture 2>&1 |
  grep -E "^crash harness|want|extra:|corrupt:|local:|tags:|panicked|test result"
