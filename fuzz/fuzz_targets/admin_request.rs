//! Fuzz the admin endpoint's request handling (`s3repl run`): arbitrary requests, as the listener
//! hands them to the handler, never panic it; an unsigned one never succeeds (but for
//! `/metrics` and `/-/health`); the same request signed as the AWS CLI signs it, with its
//! `Content-MD5`, is judged without an internal error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    s3repl_tools::fuzzing::admin_request(data);
});
