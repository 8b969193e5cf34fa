//! CRC32C of several frames at once, for the reader's hot path.
//!
//! One CRC32C instruction has a latency of three cycles and a throughput of one per cycle, so a
//! single short frame (a 200-byte record is 25 eight-byte steps) leaves two thirds of the unit
//! idle: the `crc32c` crate only interleaves streams *within* a buffer, and only for long ones.
//! Verifying three consecutive frames together keeps three independent dependency chains in
//! flight. The results are exactly `crc32c::crc32c` of each buffer (tested below).

/// CRC32C of three buffers: by carry-less multiplication where the CPU has AVX-512 and
/// VPCLMULQDQ and every buffer is at least 64 bytes long, else interleaved where it has SSE4.2.
pub(crate) fn crc32c_3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        if a.len().min(b.len()).min(c.len()) >= 64 && fold::available() {
            // SAFETY: `fold::available` checked every feature `fold::crc` enables.
            return unsafe { [fold::crc(a), fold::crc(b), fold::crc(c)] };
        }
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2, the only feature `x86::crc3` enables.
            return unsafe { x86::crc3(a, b, c) };
        }
    }
    [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};

    fn word(w: &[u8]) -> u64 {
        u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))
    }

    /// Three CRC32C chains over the common eight-byte prefix, then each tail alone.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn crc3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
        let [mut sa, mut sb, mut sc] = [u64::from(u32::MAX); 3];
        let words = a.chunks_exact(8).zip(b.chunks_exact(8)).zip(c.chunks_exact(8));
        let mut done = 0;
        for ((wa, wb), wc) in words {
            sa = _mm_crc32_u64(sa, word(wa));
            sb = _mm_crc32_u64(sb, word(wb));
            sc = _mm_crc32_u64(sc, word(wc));
            done += 8;
        }
        [
            tail(sa, a.get(done..).unwrap_or_default()),
            tail(sb, b.get(done..).unwrap_or_default()),
            tail(sc, c.get(done..).unwrap_or_default()),
        ]
    }

    /// Continues a raw chain over the rest of one buffer and finishes it (inverts).
    #[target_feature(enable = "sse4.2")]
    #[inline]
    fn tail(mut state: u64, rest: &[u8]) -> u32 {
        let words = rest.chunks_exact(8);
        let bytes = words.remainder();
        for w in words {
            state = _mm_crc32_u64(state, word(w));
        }
        let mut state = u32::try_from(state).unwrap_or(0);
        for &byte in bytes {
            state = _mm_crc32_u8(state, byte);
        }
        !state
    }
}

/// CRC32C by folding: 64 bytes at a time with VPCLMULQDQ on four 128-bit lanes, the lanes
/// folded into one, and the last 16 + fewer than 64 bytes by the CRC32 instruction.
///
/// Bits are reflected, as CRC32C's are: in a 64-bit little-endian load, bit `i` is the
/// coefficient of `x^(63-i)`. Carry-less multiplying such a word by a constant `k` (a 32-bit
/// reflected value in the low half of its word) yields `word * k * x^33` read as 128 reflected
/// bits, so moving a lane's first word `d` bytes on takes `k = x^(8d+31) mod P` and its second
/// word `k = x^(8d-33) mod P`.
#[cfg(target_arch = "x86_64")]
mod fold {
    use std::arch::x86_64::{
        __m512i, _mm_crc32_u8, _mm_crc32_u64, _mm_cvtsi128_si64, _mm_extract_epi64, _mm_xor_si128,
        _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_xor_si256, _mm512_castsi512_si256,
        _mm512_clmulepi64_epi128, _mm512_extracti32x4_epi32, _mm512_extracti64x4_epi64,
        _mm512_loadu_si512, _mm512_set_epi64, _mm512_ternarylogic_epi64, _mm512_xor_si512,
    };

    /// The reflected CRC32C polynomial without its `x^32` term.
    const POLY: u32 = 0x82F6_3B78;

    /// `x^n mod P`, reflected.
    const fn xnmodp(n: u32) -> u32 {
        let mut v: u32 = 0x8000_0000;
        let mut i = 0;
        while i < n {
            v = (v >> 1) ^ if v & 1 == 1 { POLY } else { 0 };
            i += 1;
        }
        v
    }

    /// The constants moving a lane `d` bytes on: (first word's, second word's).
    #[allow(clippy::cast_lossless)] // `i64::from` is not available in a `const fn`.
    const fn lane(d: u32) -> (i64, i64) {
        (xnmodp(8 * d + 31) as i64, xnmodp(8 * d - 33) as i64)
    }

    const ON_64: (i64, i64) = lane(64);
    const ON_48: (i64, i64) = lane(48);
    const ON_32: (i64, i64) = lane(32);
    const ON_16: (i64, i64) = lane(16);

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.2")
    }

    #[target_feature(enable = "avx512f,vpclmulqdq")]
    #[inline]
    fn load(b: &[u8]) -> __m512i {
        let Some(b) = b.get(..64) else { return _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, 0) };
        // SAFETY: `b` holds 64 readable bytes; the load is unaligned.
        unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
    }

    /// CRC32C of `b`, which must be at least 64 bytes long (shorter input gives a wrong
    /// value, never undefined behaviour).
    #[target_feature(enable = "avx512f,vpclmulqdq,sse4.2")]
    pub(super) fn crc(data: &[u8]) -> u32 {
        let blocks = data.chunks_exact(64);
        let rest = blocks.remainder();
        let mut blocks = blocks.map(|block| load(block));
        // The initial CRC state (all ones) enters as the first four bytes inverted.
        let Some(first) = blocks.next() else { return 0 };
        let mut acc = _mm512_xor_si512(first, _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, 0xFFFF_FFFF));
        let consts = _mm512_set_epi64(
            ON_64.1, ON_64.0, ON_64.1, ON_64.0, ON_64.1, ON_64.0, ON_64.1, ON_64.0,
        );
        for next in blocks {
            let lo = _mm512_clmulepi64_epi128::<0x00>(acc, consts);
            let hi = _mm512_clmulepi64_epi128::<0x11>(acc, consts);
            acc = _mm512_ternarylogic_epi64::<0x96>(lo, hi, next);
        }
        // Lanes 0, 1 and 2 move on to lane 3 (48, 32 and 16 bytes); lane 3 stays.
        let consts = _mm512_set_epi64(0, 0, ON_16.1, ON_16.0, ON_32.1, ON_32.0, ON_48.1, ON_48.0);
        let lo = _mm512_clmulepi64_epi128::<0x00>(acc, consts);
        let hi = _mm512_clmulepi64_epi128::<0x11>(acc, consts);
        let folded = _mm512_xor_si512(lo, hi);
        let folded = _mm256_xor_si256(
            _mm512_castsi512_si256(folded),
            _mm512_extracti64x4_epi64::<1>(folded),
        );
        let folded =
            _mm_xor_si128(_mm256_castsi256_si128(folded), _mm256_extracti128_si256::<1>(folded));
        let last = _mm_xor_si128(folded, _mm512_extracti32x4_epi32::<3>(acc));
        #[allow(clippy::cast_sign_loss)]
        let (w0, w1) = (_mm_cvtsi128_si64(last) as u64, _mm_extract_epi64::<1>(last) as u64);
        let mut state = _mm_crc32_u64(_mm_crc32_u64(0, w0), w1);
        let words = rest.chunks_exact(8);
        let bytes = words.remainder();
        for word in words {
            state = _mm_crc32_u64(state, u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
        }
        let mut state = u32::try_from(state).unwrap_or(0);
        for &byte in bytes {
            state = _mm_crc32_u8(state, byte);
        }
        !state
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn equals_the_crate(b in proptest::collection::vec(any::<u8>(), 64..1200)) {
                if super::available() {
                    // SAFETY: the features were detected.
                    prop_assert_eq!(unsafe { super::crc(&b) }, crc32c::crc32c(&b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crc32c_3;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equals_the_crate_on_each_buffer(
            a in proptest::collection::vec(any::<u8>(), 0..400),
            b in proptest::collection::vec(any::<u8>(), 0..400),
            c in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let want = [crc32c::crc32c(&a), crc32c::crc32c(&b), crc32c::crc32c(&c)];
            prop_assert_eq!(crc32c_3(&a, &b, &c), want);
        }
    }

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        let z = [0u8; 32];
        assert_eq!(crc32c_3(&z, b"", b"123456789"), [0x8A91_36AA, 0, 0xE306_9283]);
    }
}
