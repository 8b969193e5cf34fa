//! Known answers, round trips at every boundary, tamper detection and re-encryption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::cast_possible_truncation, clippy::too_many_lines)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use s3repl_crypto::{
    AeadKey, DataKey, DecryptStream, EncryptStream, Error, FileKeyring, HEADER_LEN, KeyStore,
    MasterKey, ObjectIdentity, Opener, PlaintextDigest, ReEncryptStream, ReEncryptor, Sealer,
    StreamHeader, TAG_LEN, WrappedKey,
};
use zeroize::Zeroizing;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// AES-256-GCM test cases 13, 14 and 16 of `McGrew` and `Viega`, "The Galois/Counter Mode of
/// Operation", appendix B (the NIST GCM submission).
#[test]
fn aes_256_gcm_known_answers() {
    let cases = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (k, iv, p, a, c, t) in cases {
        let key = AeadKey::new(&hex(k).try_into().unwrap());
        let nonce: [u8; 12] = hex(iv).try_into().unwrap();
        let mut buf = hex(p);
        let tag = key.seal(nonce, &hex(a), &mut buf);
        assert_eq!(buf, hex(c));
        assert_eq!(tag.to_vec(), hex(t));
        assert!(key.open(nonce, &hex(a), &mut buf, &tag));
        assert_eq!(buf, hex(p));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!key.open(nonce, &hex(a), &mut hex(c), &bad));
    }
}

/// BLAKE3's published test vectors (input byte i is i % 251).
#[test]
fn blake3_known_answers() {
    let input = |n: usize| (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect::<Vec<u8>>();
    for (len, want) in [
        (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        (1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
        (1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"),
    ] {
        let mut d = PlaintextDigest::new(false);
        // Streamed in uneven pieces: the incremental hash equals the one-shot hash.
        for chunk in input(len).chunks(7) {
            d.update(chunk);
        }
        assert_eq!(d.finalize().whole.to_hex().as_str(), want, "len {len}");
    }
}

fn seal_all(dek: &DataKey, package: u32, data: &[u8]) -> Vec<u8> {
    let mut sealer = Sealer::new(dek, package).unwrap();
    let mut out = sealer.header_bytes().to_vec();
    let chunks: Vec<&[u8]> =
        if data.is_empty() { vec![&[][..]] } else { data.chunks(package as usize).collect() };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        out.extend_from_slice(&sealer.seal(BytesMut::from(c), i + 1 == n).unwrap());
    }
    out
}

fn decrypt_stream(dek: DataKey, data: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
    let mut d = DecryptStream::new(dek);
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        d.update(c, |b: Bytes| out.extend_from_slice(&b))?;
    }
    out.extend_from_slice(&d.finish()?);
    Ok(out)
}

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes(Zeroizing::new([byte; 32]))
}

#[test]
fn round_trips_at_every_boundary() {
    for package in [16u32, 65536] {
        let p = package as usize;
        for len in [0, 1, p - 1, p, p + 1, 2 * p, 5 * p + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let sealed = seal_all(&key(1), package, &data);
            let header = StreamHeader::parse(&sealed).unwrap();
            assert_eq!(sealed.len() as u64, header.ciphertext_len(len as u64), "len {len}");
            assert_eq!(header.plaintext_len(sealed.len() as u64).unwrap(), len as u64);
            for chunk in [1, 7, p, p + TAG_LEN, sealed.len()] {
                if chunk == 1 && len > 4 * p {
                    continue;
                }
                assert_eq!(
                    decrypt_stream(key(1), &sealed, chunk).unwrap(),
                    data,
                    "len {len} chunk {chunk}"
                );
            }
            // The buffered encryptor produces a stream the same opener accepts.
            let mut e = EncryptStream::new(&key(2), package).unwrap();
            let mut out = e.header_bytes().to_vec();
            for c in data.chunks(13) {
                e.update(c, |b| out.extend_from_slice(&b)).unwrap();
            }
            out.extend_from_slice(&e.finish().unwrap());
            assert_eq!(out.len(), sealed.len());
            assert_eq!(decrypt_stream(key(2), &out, 4096).unwrap(), data);
        }
    }
}

fn packages(sealed: &[u8], package: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (h, body) = sealed.split_at(HEADER_LEN);
    (h.to_vec(), body.chunks(package + TAG_LEN).map(<[u8]>::to_vec).collect())
}

fn join(h: &[u8], ps: &[Vec<u8>]) -> Vec<u8> {
    let mut out = h.to_vec();
    for p in ps {
        out.extend_from_slice(p);
    }
    out
}

#[test]
fn tampering_is_detected_with_typed_errors() {
    let data: Vec<u8> = (0..100u8).collect();
    let sealed = seal_all(&key(1), 16, &data);
    let (h, ps) = packages(&sealed, 16);
    assert_eq!(ps.len(), 7);
    let tampered = |bytes: &[u8]| decrypt_stream(key(1), bytes, 5);

    let mut flipped = sealed.clone();
    flipped[HEADER_LEN + 40] ^= 0x40; // inside package 1 (packages are 32 bytes sealed)
    assert!(matches!(tampered(&flipped), Err(Error::Tampered { package: 1 })));

    let mut swapped = ps.clone();
    swapped.swap(1, 2);
    assert!(matches!(tampered(&join(&h, &swapped)), Err(Error::Tampered { package: 1 })));

    let mut duplicated = ps.clone();
    duplicated.insert(2, ps[1].clone());
    assert!(matches!(tampered(&join(&h, &duplicated)), Err(Error::Tampered { package: 2 })));

    let mut dropped = ps.clone();
    dropped.remove(3);
    assert!(matches!(tampered(&join(&h, &dropped)), Err(Error::Tampered { package: 3 })));

    // Cut at a package boundary: recognised as truncation, not accepted.
    assert!(matches!(tampered(&join(&h, &ps[..4])), Err(Error::Truncated { packages: 4 })));
    // Cut inside a package, and cut inside the tag.
    assert!(tampered(&sealed[..sealed.len() - 3]).is_err());
    assert!(matches!(tampered(&sealed[..HEADER_LEN + 8]), Err(Error::Truncated { .. })));
    assert!(matches!(tampered(&sealed[..HEADER_LEN - 1]), Err(Error::Truncated { packages: 0 })));

    // Extra bytes after the last package.
    let mut extended = sealed.clone();
    extended.extend_from_slice(&ps[6]);
    assert!(tampered(&extended).is_err());

    // Wrong key.
    assert!(matches!(decrypt_stream(key(9), &sealed, 5), Err(Error::Tampered { package: 0 })));

    // Splicing a package from another object (same position, other key).
    let other = seal_all(&key(2), 16, &data);
    let (_, other_ps) = packages(&other, 16);
    let mut spliced = ps.clone();
    spliced[2] = other_ps[2].clone();
    assert!(matches!(tampered(&join(&h, &spliced)), Err(Error::Tampered { package: 2 })));

    // Header edits: another nonce prefix authenticates nothing; a bad magic is malformed.
    let mut header_edit = sealed.clone();
    header_edit[13] ^= 1;
    assert!(matches!(tampered(&header_edit), Err(Error::Tampered { package: 0 })));
    let mut bad_magic = sealed;
    bad_magic[0] = b'X';
    assert!(matches!(tampered(&bad_magic), Err(Error::Malformed { .. })));
}

const KMS_A: &str = "arn:aws:kms:us-east-1:111122223333:key/aaaa";
const KMS_B: &str = "arn:aws:kms:us-east-1:111122223333:key/bbbb";

fn ring() -> FileKeyring {
    let mut r = FileKeyring::default();
    r.insert(
        KMS_A,
        &["arn:aws:kms:us-east-1:111122223333:alias/a".to_owned()],
        Zeroizing::new([0xA; 32]),
    )
    .unwrap();
    r.insert(KMS_B, &[], Zeroizing::new([0xB; 32])).unwrap();
    r
}

#[test]
fn wrapped_keys_are_bound_to_key_and_object() {
    let ring = ring();
    let obj = ObjectIdentity { bucket: "b", key: "k", version_id: "v1" };
    let dek = DataKey::generate().unwrap();
    let master = ring.master_key("arn:aws:kms:us-east-1:111122223333:alias/a").unwrap();
    let wrapped = dek.wrap(&master, obj).unwrap();
    assert_eq!(wrapped.key_id(), KMS_A, "wrapped under the canonical id, not the alias");
    let decoded = WrappedKey::decode(&wrapped.encode()).unwrap();
    assert_eq!(decoded, wrapped);
    // The unwrapped key decrypts what the original sealed.
    let sealed = seal_all(&dek, 16, b"hello, replica");
    let back = decoded.unwrap_with(&ring, obj).unwrap();
    assert_eq!(decrypt_stream(back, &sealed, 3).unwrap(), b"hello, replica");
    for other in [
        ObjectIdentity { bucket: "b2", ..obj },
        ObjectIdentity { key: "k2", ..obj },
        ObjectIdentity { version_id: "v2", ..obj },
    ] {
        assert!(
            matches!(decoded.unwrap_with(&ring, other), Err(Error::Unwrap { .. })),
            "{other:?}"
        );
    }
    let b = ring.master_key(KMS_B).unwrap();
    assert!(matches!(decoded.unwrap_key(&b, obj), Err(Error::Unwrap { .. })), "wrong master key");
    // Relabelling the wrap with another key id does not help.
    let relabelled = MasterKey::new(KMS_A, Zeroizing::new([0xB; 32]));
    assert!(matches!(decoded.unwrap_key(&relabelled, obj), Err(Error::Unwrap { .. })));
    let mut bytes = wrapped.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        WrappedKey::decode(&bytes).unwrap().unwrap_with(&ring, obj),
        Err(Error::Unwrap { .. })
    ));
    assert!(matches!(WrappedKey::decode(&bytes[..bytes.len() - 1]), Err(Error::Malformed { .. })));
    assert!(matches!(
        ring.master_key("arn:aws:kms:us-east-1:111122223333:key/none"),
        Err(Error::UnknownKey(_))
    ));
}

#[test]
fn re_encryption_moves_data_to_the_replica_key_only() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let src = key(1);
    let sealed = seal_all(&src, 4096, &data);
    let mut re = ReEncryptStream::new(key(1), key(2), false);
    let mut out = Vec::new();
    for c in sealed.chunks(1000) {
        re.update(c, |b| out.extend_from_slice(&b)).unwrap();
    }
    let (last, digest) = re.finish().unwrap();
    out.extend_from_slice(&last);
    assert_eq!(digest.whole, blake3::hash(&data));
    assert_eq!(digest.len, data.len() as u64);
    assert_eq!(decrypt_stream(key(2), &out, 777).unwrap(), data);
    assert!(decrypt_stream(key(1), &out, 777).is_err(), "the source key no longer opens it");
    assert_ne!(&out[..HEADER_LEN], &sealed[..HEADER_LEN], "fresh nonce prefix");

    // The package-level API, with per-part digests at a part boundary.
    let (h, ps) = packages(&sealed, 4096);
    let mut re = ReEncryptor::new(&src, &h, &key(3), true).unwrap();
    let mut replica = re.header_bytes().to_vec();
    let n = ps.len();
    for (i, p) in ps.into_iter().enumerate() {
        replica.extend_from_slice(&re.package(BytesMut::from(&p[..]), i + 1 == n).unwrap());
        if i == 7 {
            re.digest_mut().finish_part();
        }
    }
    re.digest_mut().finish_part();
    let d = re.digest().finalize();
    assert_eq!(d.parts, vec![blake3::hash(&data[..8 * 4096]), blake3::hash(&data[8 * 4096..])]);
    assert_eq!(decrypt_stream(key(3), &replica, 5000).unwrap(), data);
}

/// Re-encrypts `buf`'s packages: in place, or (`into`) from a copy into `buf` after
/// scrambling it, so that nothing of the source survives where the replica is written.
fn reencrypt_part(
    re: &mut ReEncryptor,
    buf: &mut [u8],
    last: bool,
    into: bool,
) -> Result<u64, Error> {
    if !into {
        return re.packages_in_place(buf, last);
    }
    let sealed = buf.to_vec();
    for b in buf.iter_mut() {
        *b ^= 0xA5;
    }
    re.packages_into(&sealed, buf, last)
}

/// Re-encrypts `sealed` in place (or, `into`, part by part into another buffer), the packages
/// cut into parts of `per_part` packages (the first part also holding the header), as the
/// engine does with a multipart copy.
fn reencrypt_in_place(
    source: &DataKey,
    replica: &DataKey,
    sealed: &[u8],
    (package, per_part): (usize, usize),
    into: bool,
) -> Result<(Vec<u8>, s3repl_crypto::ObjectDigest), Error> {
    let mut re = ReEncryptor::new(source, &sealed[..HEADER_LEN], replica, false)?;
    let mut out = sealed.to_vec();
    out[..HEADER_LEN].copy_from_slice(&re.header_bytes());
    let stride = per_part * (package + TAG_LEN);
    let body = &mut out[HEADER_LEN..];
    let parts = body.len().div_ceil(stride).max(1);
    let mut plaintext = 0;
    for (i, part) in body.chunks_mut(stride).enumerate() {
        plaintext += reencrypt_part(&mut re, part, i + 1 == parts, into)?;
    }
    let digest = re.finish()?;
    assert_eq!(digest.len, plaintext);
    Ok((out, digest))
}

#[test]
fn re_encryption_by_packages_refuses_what_is_not_a_whole_stream() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 241) as u8).collect();
    let sealed = seal_all(&key(1), 64, &data);
    let body = &sealed[HEADER_LEN..];
    let sealed_len = 64 + TAG_LEN;
    let new = || ReEncryptor::new(&key(1), &sealed[..HEADER_LEN], &key(2), false).unwrap();
    for into in [false, true] {
        let run = |re: &mut ReEncryptor, bytes: &[u8], last| {
            reencrypt_part(re, &mut bytes.to_vec(), last, into)
        };
        // A part that ends inside a package and is not the last.
        let part = &body[..sealed_len + 10];
        assert!(matches!(run(&mut new(), part, false), Err(Error::Malformed { .. })), "{into}");
        // Whole packages, but the stream was cut: the final one is not sealed as last.
        let cut = &body[..3 * sealed_len];
        assert!(matches!(run(&mut new(), cut, true), Err(Error::Tampered { package: 2 })));
        // Never finished: no last package seen.
        let mut re = new();
        run(&mut re, &body[..sealed_len], false).unwrap();
        assert!(matches!(re.finish(), Err(Error::Truncated { packages: 1 })));
        // Packages out of order: the counter is in the nonce.
        let second = &body[sealed_len..2 * sealed_len];
        assert!(matches!(run(&mut new(), second, false), Err(Error::Tampered { .. })));
        // Nothing after the last package.
        let mut re = new();
        run(&mut re, body, true).unwrap();
        assert!(run(&mut re, &body[..sealed_len], false).is_err());
        assert!(matches!(run(&mut new(), &[], true), Err(Error::Truncated { .. })));
        // The wrong source key.
        let mut wrong = ReEncryptor::new(&key(9), &sealed[..HEADER_LEN], &key(2), false).unwrap();
        assert!(run(&mut wrong, body, true).is_err());
        // A tampered package is refused and its bytes zeroed (it may have been decrypted).
        let mut buf = body[..3 * sealed_len].to_vec();
        buf[sealed_len + 5] ^= 1;
        let got = reencrypt_part(&mut new(), &mut buf, false, into);
        assert!(matches!(got, Err(Error::Tampered { package: 1 })), "{got:?}");
        assert!(buf[sealed_len..2 * sealed_len].iter().all(|&b| b == 0), "{into}");
    }
    // Into a buffer of another length.
    let mut short = vec![0u8; body.len() - 1];
    assert!(matches!(new().packages_into(body, &mut short, true), Err(Error::Malformed { .. })));
}

#[test]
fn ranged_reads_open_single_packages() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let sealed = seal_all(&key(4), 64, &data);
    let opener = Opener::new(&key(4), &sealed).unwrap();
    let header = *opener.header();
    let count = header.package_count(data.len() as u64);
    for i in [0, 5, count - 1] {
        let r = header.package_range(i, data.len() as u64);
        let chunk = BytesMut::from(&sealed[r.start as usize..r.end as usize]);
        let plain = opener.open_at(i, chunk, i == count - 1).unwrap();
        let start = (i * 64) as usize;
        assert_eq!(&plain[..], &data[start..(start + 64).min(data.len())]);
    }
    // A middle package claimed to be the last does not open.
    let r = header.package_range(5, data.len() as u64);
    assert!(
        opener.open_at(5, BytesMut::from(&sealed[r.start as usize..r.end as usize]), true).is_err()
    );
}

#[test]
fn keyring_refuses_bad_setups() {
    let dir = std::env::temp_dir().join(format!("s3repl-crypto-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let _ = std::fs::remove_file(&path);
    let ring = FileKeyring::generate(&path, &[KMS_A]).unwrap();
    assert!(FileKeyring::generate(&path, &[KMS_A]).is_err(), "never overwrites a keyring");
    let loaded = FileKeyring::open(&path).unwrap();
    let obj = ObjectIdentity { bucket: "b", key: "k", version_id: "v" };
    let w = DataKey::generate().unwrap().wrap(&ring.master_key(KMS_A).unwrap(), obj).unwrap();
    assert!(w.unwrap_with(&loaded, obj).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_data_any_chunking_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        package in 1u32..300,
        chunk in 1usize..500,
    ) {
        let dek = key(7);
        let mut e = EncryptStream::new(&dek, package).unwrap();
        let mut sealed = e.header_bytes().to_vec();
        for c in data.chunks(chunk) {
            e.update(c, |b| sealed.extend_from_slice(&b)).unwrap();
        }
        sealed.extend_from_slice(&e.finish().unwrap());
        prop_assert_eq!(sealed.len() as u64, StreamHeader::parse(&sealed).unwrap().ciphertext_len(data.len() as u64));
        prop_assert_eq!(decrypt_stream(key(7), &sealed, chunk * 3 + 1).unwrap(), data);
    }

    /// Re-encryption by parts (in place or into another buffer) gives the stream that
    /// re-encrypting it as one chunk stream would (same plaintext under the replica key only, same digest, same length).
    #[test]
    fn re_encryption_by_parts_matches_the_stream(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        package in 1u32..300,
        per_part in 1usize..8,
        into in any::<bool>(),
    ) {
        let sealed = seal_all(&key(5), package, &data);
        let shape = (package as usize, per_part);
        let (out, digest) = reencrypt_in_place(&key(5), &key(6), &sealed, shape, into).unwrap();
        prop_assert_eq!(out.len(), sealed.len());
        prop_assert_eq!(digest.whole, blake3::hash(&data));
        prop_assert_eq!(decrypt_stream(key(6), &out, 97).unwrap(), data.clone());
        prop_assert!(decrypt_stream(key(5), &out, 97).is_err());
        let mut stream = ReEncryptStream::new(key(5), key(6), false);
        let mut reference = Vec::new();
        stream.update(&sealed, |b| reference.extend_from_slice(&b)).unwrap();
        let (tail, expected) = stream.finish().unwrap();
        reference.extend_from_slice(&tail);
        prop_assert_eq!(reference.len(), out.len());
        prop_assert_eq!(expected, digest);
    }

    #[test]
    fn any_single_byte_change_is_caught(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        at in any::<proptest::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut sealed = seal_all(&key(8), 64, &data);
        let i = at.index(sealed.len());
        sealed[i] ^= xor;
        prop_assert!(decrypt_stream(key(8), &sealed, 50).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decrypt_stream(key(1), &bytes, 17);
        let _ = WrappedKey::decode(&bytes);
        let _ = StreamHeader::parse(&bytes);
    }
}
