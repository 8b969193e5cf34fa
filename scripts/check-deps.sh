#!/usr/bin/env bash
# Enforces the crate dependency direction of DESIGN.md: io and crypto depend on nothing of ours,
# engine only on io and crypto, tools on engine (and through it on io/crypto).
set -euo pipefail
cd "$(dirname "$0")/.."
ours='s3repl|s3repl-io|s3repl-crypto|s3repl-tools|s3repl-benches|s3repl-tests'
deps() { cargo tree -p "$1" --edges normal --depth 1 --prefix none --locked 2>/dev/null | tail -n +2 | awk '{print $1}' | { grep -E "^($ours)$" || true; } | sort -u | tr '\n' ' '; }
fail=0
check() { # crate, allowed (space-separated)
  local got; got=$(deps "$1")
  for d in $got; do
    case " $2 " in *" $d "*) ;; *) echo "dependency direction violated: $1 depends on $d"; fail=1;; esac
  done
}
check s3repl-io ""
check s3repl-crypto ""
check s3repl "s3repl-io s3repl-crypto"
check s3repl-tools "s3repl"
[ "$fail" = 0 ] && echo "dependency direction ok"
exit "$fail"
