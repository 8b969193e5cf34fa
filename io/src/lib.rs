//! `s3repl-io`: the committed-version log (segments, writer, `io_uring` reader, checkpoints),
//! object sources and destinations.
//!
//! This crate is a leaf (no other s3repl crate). Its contents land with the log issue; until
//! then it is an empty facade so the workspace layout and the dependency direction
//! (`engine` → `io`) are fixed from the start.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]
