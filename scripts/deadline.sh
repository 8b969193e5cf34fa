#!/usr/bin/env bash
# Runs a command with a deadline. Past it, prints every thread's stack of the command's test
# processes (the binaries under $CARGO_TARGET_DIR, with gdb where installed), kills the whole
# process tree and exits 124: a hang anywhere in the suite fails in bounded time, with the
# stacks that show where, instead of holding CI until its own limit without a trace (the Kafka
# tests also arm a watchdog of their own: `s3repl_tests::watchdog`).
# Usage: scripts/deadline.sh SECONDS COMMAND [ARG...]
set -uo pipefail
limit="$1"
shift
target="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"

# Every descendant of process $1, children before their parents' siblings.
descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

"$@" &
pid=$!
start=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
  if ((SECONDS - start >= limit)); then
    echo "deadline: '$*' still running after ${limit} s" >&2
    tree=$(descendants "$pid")
    for p in $tree; do
      exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
      case "$exe" in
      "$target"/*)
        echo "deadline: stacks of $p ($(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-300)):" >&2
        if command -v gdb >/dev/null; then
          timeout 120 gdb -p "$p" -batch -nx -ex "set pagination off" -ex "thread apply all bt" >&2 2>&1 </dev/null
        else
          echo "deadline: gdb is not installed; no stacks" >&2
        fi
        ;;
      esac
    done
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $tree "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exit 124
  fi
  sleep 1
done
wait "$pid"
