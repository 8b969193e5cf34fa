//! Fuzz the streaming AEAD decoder: arbitrary bytes, split at an arbitrary point, must never
//! panic, and must only authenticate if they really are a stream sealed under the key. The
//! same bytes re-encrypted by packages, in place and from a shared buffer into another, must
//! never panic and must agree on what they accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl_crypto::{DataKey, DecryptStream, HEADER_LEN, ReEncryptor};
use zeroize::Zeroizing;

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(Zeroizing::new([byte; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let mut d = DecryptStream::new(key(3));
    let (a, b) = body.split_at(usize::from(split).min(body.len()));
    let mut ok = d.update(a, |_| {}).is_ok();
    ok = ok && d.update(b, |_| {}).is_ok();
    if ok {
        let _ = d.finish();
    }
    // Re-encryption of the packages after the header, as one last part.
    let Some(packages) = body.get(HEADER_LEN..) else { return };
    let (Ok(mut in_place), Ok(mut into)) = (
        ReEncryptor::new(&key(3), body, &key(4), false),
        ReEncryptor::new(&key(3), body, &key(4), false),
    ) else {
        return;
    };
    let mut buf = packages.to_vec();
    let mut out = vec![0u8; packages.len()];
    let a = in_place.packages_in_place(&mut buf, true).map_err(|e| e.to_string());
    let b = into.packages_into(packages, &mut out, true).map_err(|e| e.to_string());
    assert_eq!(a, b, "in place and into disagree");
});
