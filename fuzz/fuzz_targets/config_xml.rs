//! Fuzz the XML configuration codec: parse in both variants, validate what parses, and check
//! that what parses serializes and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl::config::{BucketContext, ReplicationConfiguration, Variant};

fuzz_target!(|data: &[u8]| {
    for variant in [None, Some(Variant::S3), Some(Variant::S3Control)] {
        if let Ok(config) = ReplicationConfiguration::from_xml(data, variant) {
            let _ = config.validate(&BucketContext::default());
            let again = ReplicationConfiguration::from_xml(
                config.to_xml().as_bytes(),
                Some(config.variant),
            );
            assert_eq!(again.as_ref(), Ok(&config));
        }
    }
});
