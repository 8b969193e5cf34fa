//! Fuzz the envelope decoders: wrapped keys and stream headers parse or fail cleanly, and
//! what parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl_crypto::{StreamHeader, WrappedKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = WrappedKey::decode(data) {
        assert_eq!(w.encode(), data);
    }
    if let Ok(h) = StreamHeader::parse(data) {
        assert_eq!(&h.encode()[..], &data[..20]);
    }
});
