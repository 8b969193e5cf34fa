//! End-to-end and conformance tests for s3repl; the tests live in `tests/tests/`.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]
