#!/usr/bin/env bash
# The whole test suite: unit, property, conformance, CLI and doc tests of every crate.
# Installs whatever the tests need first: SeaweedFS, the real S3-compatible server the end-to-end
# tests start on 127.0.0.1, Azurite, the Azure Blob Storage emulator, tansu, the Kafka-protocol
# broker of the Kafka log's tests, and the AWS CLI that drives the admin endpoint of `s3repl run`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build outside the clone so a fresh clone on the same machine reuses the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3repl/target}"
S3REPL_WEED="$(scripts/install-seaweedfs.sh)"
export S3REPL_WEED
S3REPL_AWS="$(scripts/install-awscli.sh)"
export S3REPL_AWS
S3REPL_AZURITE="$(scripts/install-azurite.sh)"
export S3REPL_AZURITE
S3REPL_TANSU="$(scripts/install-tansu.sh)"
export S3REPL_TANSU
# Each run of tests has a deadline (45 minutes; a clean run of the first takes under 10 here):
# past it, the stacks of the test processes are printed and the run fails (scripts/deadline.sh).
deadline=(scripts/deadline.sh "${S3REPL_TEST_DEADLINE_S:-2700}")
"${deadline[@]}" cargo test --workspace --all-targets --locked
"${deadline[@]}" cargo test --workspace --doc --locked
# A local-only embedder's build (no cloud backends, no io_uring: `pread` readers): the engine's
# own tests and its embedding example.
"${deadline[@]}" cargo test -p s3repl --no-default-features --features aws-lc,testing --locked
# The alternative AES-GCM backend (RustCrypto) must keep passing the same known answers.
"${deadline[@]}" cargo test -p s3repl-crypto --no-default-features --features rustcrypto --locked
# The admin endpoint's request handling, fuzzed for a few seconds (scripts/fuzz.sh runs every
# target for longer).
scripts/fuzz.sh "${S3REPL_FUZZ_SECONDS:-10}" admin_request
# Scale-out on Kafka (issue 27), short: one, two and three `s3repl run` processes in a group,
# then one SIGKILLed mid-run; fails when a version is missing or written twice.
scripts/scale-out.sh --quick
# The README's quickstart (SeaweedFS buckets, backfill, a bucket event, verify), as a user runs it.
scripts/quickstart.sh
