//! Fuzz the version record decoder: decode never panics, and what decodes re-encodes to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl::record::VersionRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = VersionRecord::decode(data) {
        assert_eq!(r.to_bytes().unwrap(), data);
    }
});
