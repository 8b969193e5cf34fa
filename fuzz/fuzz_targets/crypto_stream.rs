//! Fuzz the streaming AEAD decoder: arbitrary bytes, split at an arbitrary point, must never
//! panic, and must only authenticate if they really are a stream sealed under the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3repl_crypto::{DataKey, DecryptStream};
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let mut d = DecryptStream::new(DataKey::from_bytes(Zeroizing::new([3; 32])));
    let (a, b) = body.split_at(usize::from(split).min(body.len()));
    let mut ok = d.update(a, |_| {}).is_ok();
    ok = ok && d.update(b, |_| {}).is_ok();
    if ok {
        let _ = d.finish();
    }
});
