//! `s3repl-crypto`: KMS keyring, data-key envelopes, streaming AEAD re-encryption and BLAKE3
//! integrity for replicas of SSE-KMS objects.
//!
//! This crate is a leaf (no other s3repl crate, no async runtime). Its contents land with the
//! encrypted-replicas issue; until then it is an empty facade so the workspace layout and the
//! dependency direction (`engine` → `crypto`) are fixed from the start.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]
