//! `s3repl`: an S3 bucket replication engine for storage servers.
//!
//! The crate an embedding server depends on. Today it holds the replication configuration
//! ([`config`]): S3 XML and AWS CLI JSON codecs and S3's validation with its error codes. Rule
//! matching, the committed-version log and the replication pipeline build on it (see
//! `ARCHITECTURE.md`).
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

pub mod config;
pub mod rules;
