//! Fuzz the version record decoder: decode never panics; what decodes re-encodes (as the
//! current version) to a record that decodes to the same value; and a current-version record
//! re-encodes to exactly its own bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl::record::{RECORD_VERSION, VersionRecord};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = VersionRecord::decode(data) {
        let again = r.to_bytes().unwrap();
        assert_eq!(VersionRecord::decode(&again).as_ref(), Ok(&r));
        if data.first() == Some(&RECORD_VERSION) {
            assert_eq!(again, data);
        }
    }
});
