//! Fuzz the webhook intake's parser of S3 event notification messages (`s3repl run`'s
//! `POST /-/events`): arbitrary bodies never panic it, and what it accepts is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    s3repl_tools::fuzzing::intake_events(data);
});
