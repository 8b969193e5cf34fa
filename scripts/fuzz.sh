#!/usr/bin/env bash
# Short fuzzing runs of every cargo-fuzz target (default 30 s each).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# cargo-fuzz needs nightly-only sanitizer flags; the machine has one stable toolchain, so we
# run it with RUSTC_BOOTSTRAP=1 (the fuzz crate is outside the workspace and never ships).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"; shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  echo "== fuzzing $t for ${secs}s"
  (cd fuzz && cargo fuzz run "$t" "corpus/$t" "${seeds[@]/#fuzz\//}" -- -max_total_time="$secs" -max_len=65536)
done
