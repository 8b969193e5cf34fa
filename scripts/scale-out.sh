#!/usr/bin/env bash
# Scale-out on Kafka (issue 27): `s3repl run` processes in one consumer group over a topic of
# committed versions, into a versioned SeaweedFS bucket behind a proxy that adds 50 ms to every
# request (a destination bound by request latency: each process keeps 8 versions in flight, so
# throughput grows with processes, not with this machine's two cores). One process, then two,
# then three on the same workload; then two, one SIGKILLed a third of the way through.
# The brokers are librdkafka's mock cluster, hosted by the measuring program (tansu 0.6 loses a
# group once a member leaves); the group uses KIP-848's consumer protocol unless
# `--group-protocol classic`. The measuring program: tools/examples/scale_out.rs.
#
# Usage: scripts/scale-out.sh [--quick] [more options of the example, e.g. --objects 6000]
# The last line is one JSON object; exit status 0 only when the killed run lost and duplicated
# nothing. --quick (720 versions a run, debug build) fits in CI: scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
profile=release
for a in "$@"; do [ "$a" = --quick ] && profile=debug; done
if [ "$profile" = release ]; then flag=--release; else flag=; fi
cargo build $flag -p s3repl-tools --bin s3repl --example scale_out --locked >&2
"$CARGO_TARGET_DIR/$profile/examples/scale_out" --s3repl "$CARGO_TARGET_DIR/$profile/s3repl" "$@"
