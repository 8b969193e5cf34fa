#!/usr/bin/env bash
# The hostile-client suite at full size (issue 25): 1,000 unauthenticated 2 MiB bodies and
# 20,000 idle connection attempts against `s3repl run`, plus the unsigned, wrong-key, skewed,
# replayed, oversized, entity-bomb, deep-nesting, path-traversal and slow requests. Prints the
# flood's figures (peak RSS, descriptors, log lines per second). The test suite runs it with
# 2,000 idle connections. Needs a descriptor limit above 8,500 for this process.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
ulimit -n "$(ulimit -Hn)"
export S3REPL_HOSTILE_BODIES="${1:-1000}" S3REPL_HOSTILE_IDLE="${2:-20000}"
cargo test --release -p s3repl-tools --test hostile_admin --locked -- --nocapture 2>&1 |
  grep -E "^flood|panicked|test result|^test "
