//! AES-256-GCM and BLAKE3: each candidate library's raw rate on one core, beside our sealer,
//! opener and re-encryptor on 64 KiB packages (1 MiB objects).
//!
//! Ratios to report: sealer / raw (chosen backend) ≥ 0.9, opener / raw ≥ 0.9, and
//! re-encrypt+BLAKE3 / (1 / (1/open + 1/seal + 1/blake3)) ≥ 0.7.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use s3repl_crypto::{
    AeadKey, DEFAULT_PACKAGE_SIZE, DataKey, EncryptStream, Opener, ReEncryptStream, ReEncryptor,
    Sealer,
};
use zeroize::Zeroizing;

const PACKAGE: usize = DEFAULT_PACKAGE_SIZE as usize;
const OBJECT: usize = 16 * PACKAGE;

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("aes256gcm_raw");
    g.throughput(Throughput::Bytes(PACKAGE as u64));
    let key = [7u8; 32];
    let mut buf = vec![0u8; PACKAGE];
    {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        g.bench_function("aws-lc-rs", |b| {
            b.iter(|| {
                k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::from(&[0u8; 20]),
                    &mut buf,
                )
                .unwrap()
            });
        });
    }
    {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        g.bench_function("ring", |b| {
            b.iter(|| {
                k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::from(&[0u8; 20]),
                    &mut buf,
                )
                .unwrap()
            });
        });
    }
    {
        use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
        let k = Aes256Gcm::new(&key.into());
        g.bench_function("rustcrypto-aes-gcm", |b| {
            b.iter(|| {
                k.encrypt_inout_detached(&[1u8; 12].into(), &[0u8; 20], buf.as_mut_slice().into())
                    .unwrap()
            });
        });
    }
    {
        let k = AeadKey::new(&key);
        g.bench_function("s3repl-AeadKey", |b| b.iter(|| k.seal([1; 12], &[0u8; 20], &mut buf)));
    }
    g.finish();
    let mut g = c.benchmark_group("blake3_raw");
    g.throughput(Throughput::Bytes(PACKAGE as u64));
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&buf)));
    g.finish();
}

fn packages(n: usize, len: usize) -> Vec<BytesMut> {
    (0..n)
        .map(|_| {
            let mut b = BytesMut::with_capacity(len + 16);
            b.resize(len, 0x5a);
            b
        })
        .collect()
}

fn stream(c: &mut Criterion) {
    let dek = DataKey::from_bytes(Zeroizing::new([1; 32]));
    let replica = DataKey::from_bytes(Zeroizing::new([2; 32]));
    let n = OBJECT / PACKAGE;
    let mut g = c.benchmark_group("stream_1MiB");
    g.throughput(Throughput::Bytes(OBJECT as u64));
    // The baseline with the same working set as the streams: the chosen backend sealing 16
    // distinct 64 KiB buffers in place (a single hot buffer would flatter the raw rate).
    let raw_key = AeadKey::new(&[1; 32]);
    let mut bufs: Vec<Vec<u8>> = (0..n).map(|_| vec![0x5a; PACKAGE]).collect();
    g.bench_function("raw_seal", |b| {
        b.iter(|| {
            for (i, buf) in bufs.iter_mut().enumerate() {
                raw_key.seal([i as u8; 12], &[0u8; 20], buf);
            }
        });
    });
    g.bench_function("seal", |b| {
        b.iter_batched(
            || (Sealer::new(&dek, DEFAULT_PACKAGE_SIZE).unwrap(), packages(n, PACKAGE)),
            |(mut s, ps)| {
                for (i, p) in ps.into_iter().enumerate() {
                    s.seal(p, i + 1 == n).unwrap();
                }
            },
            BatchSize::SmallInput,
        );
    });
    // A sealed object to open and re-encrypt.
    let mut source = Sealer::new(&dek, DEFAULT_PACKAGE_SIZE).unwrap();
    let header = source.header_bytes();
    let sealed: Vec<Vec<u8>> = packages(n, PACKAGE)
        .into_iter()
        .enumerate()
        .map(|(i, p)| source.seal(p, i + 1 == n).unwrap().to_vec())
        .collect();
    let sealed_bufs = || sealed.iter().map(|p| BytesMut::from(&p[..])).collect::<Vec<_>>();
    g.bench_function("open", |b| {
        b.iter_batched(
            || (Opener::new(&dek, &header).unwrap(), sealed_bufs()),
            |(mut o, ps)| {
                for (i, p) in ps.into_iter().enumerate() {
                    o.open(p, i + 1 == n).unwrap();
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("reencrypt_blake3", |b| {
        b.iter_batched(
            || (ReEncryptor::new(&dek, &header, &replica, false).unwrap(), sealed_bufs()),
            |(mut r, ps)| {
                for (i, p) in ps.into_iter().enumerate() {
                    r.package(p, i + 1 == n).unwrap();
                }
                r.digest().finalize()
            },
            BatchSize::SmallInput,
        );
    });
    let plain = vec![0x5au8; OBJECT];
    // The engine's path: a stored object arriving in 256 KiB reads, framed into packages by
    // `ReEncryptStream` (beside `reencrypt_blake3`, the same work on ready-made packages).
    let mut enc = EncryptStream::new(&dek, DEFAULT_PACKAGE_SIZE).unwrap();
    let mut stored = enc.header_bytes().to_vec();
    enc.update(&plain, |p| stored.extend_from_slice(&p)).unwrap();
    stored.extend_from_slice(&enc.finish().unwrap());
    g.bench_function("reencrypt_stream_blake3", |b| {
        b.iter_batched(
            || {
                let source = DataKey::from_bytes(Zeroizing::new([1; 32]));
                ReEncryptStream::new(source, DataKey::from_bytes(Zeroizing::new([2; 32])), false)
            },
            |mut s| {
                let mut n = 0;
                for chunk in stored.chunks(256 << 10) {
                    s.update(chunk, |p| n += p.len()).unwrap();
                }
                let (tail, digest) = s.finish().unwrap();
                (n + tail.len(), digest)
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&plain)));
    g.finish();
}

criterion_group!(benches, raw, stream);
criterion_main!(benches);
