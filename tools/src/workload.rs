//! The benchmark workload: which key each generated version gets (count, length, skew), its
//! tags, the rule set it is matched against, and the share of SSE-KMS objects with the keys
//! and encrypted bytes that needs. Shared by `s3repl bench` (and usable by the load tests).

use crate::error::CliError;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use s3repl::config::ReplicationConfiguration;
use s3repl::crypto::{DataKey, EncryptStream, FileKeyring, KeyStore, ObjectIdentity};
use s3repl::record::{SseInfo, VersionRecord};
use s3repl::rules::SseKind;

/// Source and replica KMS key ids of the benchmark keyring.
pub(crate) const SOURCE_KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/bench-source";
pub(crate) const REPLICA_KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/bench-replica";

/// How versions map to keys, tags and encryption.
#[derive(Debug)]
pub(crate) struct Workload {
    /// Distinct keys (`None`: every version its own key).
    keys: Option<u64>,
    /// Cumulative Zipf weights over the keys (empty: uniform).
    cdf: Vec<f64>,
    key_length: usize,
    tags: u32,
    /// Percent of versions that are SSE-KMS objects.
    sse_kms_percent: f64,
}

/// A deterministic, well-spread 64-bit hash of `i` (`SplitMix64`'s finaliser).
fn mix(i: u64, salt: u64) -> u64 {
    let mut z = i.wrapping_add(salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[allow(clippy::cast_precision_loss)]
fn unit(i: u64, salt: u64) -> f64 {
    (mix(i, salt) >> 11) as f64 / (1u64 << 53) as f64
}

impl Workload {
    /// `keys`: distinct keys; `skew`: Zipf exponent over them (0 = uniform).
    pub(crate) fn new(
        keys: Option<u64>,
        skew: f64,
        key_length: usize,
        tags: u32,
        sse_kms_percent: f64,
    ) -> Result<Self, CliError> {
        if !(0.0..=100.0).contains(&sse_kms_percent) {
            return Err(CliError::settings("--sse-kms is a percentage (0-100)"));
        }
        if !(skew.is_finite() && skew >= 0.0) {
            return Err(CliError::settings("--key-skew must be a non-negative exponent"));
        }
        let cdf = match keys {
            Some(0) => return Err(CliError::settings("--keys must be at least 1")),
            Some(k) if skew > 0.0 => {
                if k > 10_000_000 {
                    return Err(CliError::settings(
                        "--keys with --key-skew is limited to 10,000,000",
                    ));
                }
                let mut acc = 0.0;
                #[allow(clippy::cast_precision_loss)]
                let mut cdf: Vec<f64> = (1..=k)
                    .map(|r| {
                        acc += 1.0 / (r as f64).powf(skew);
                        acc
                    })
                    .collect();
                for c in &mut cdf {
                    *c /= acc;
                }
                cdf
            }
            _ => Vec::new(),
        };
        Ok(Workload { keys, cdf, key_length, tags, sse_kms_percent })
    }

    /// The key of version `i`.
    pub(crate) fn key(&self, i: u64) -> String {
        let index = match self.keys {
            None => i,
            Some(k) if self.cdf.is_empty() => mix(i, 1) % k,
            Some(_) => {
                let u = unit(i, 2);
                self.cdf.partition_point(|c| *c < u) as u64
            }
        };
        let mut key = format!("bench/{:04}/object-{index}", index % 1000);
        if key.len() < self.key_length {
            key.push('/');
            let fill = self.key_length - key.len();
            key.extend(std::iter::repeat_n('x', fill));
        }
        key
    }

    /// The tags of version `i`.
    pub(crate) fn tags(&self, i: u64) -> Vec<(String, String)> {
        (0..self.tags)
            .map(|t| (format!("t{t}"), format!("v{}", mix(i, 3 + u64::from(t)) % 7)))
            .collect()
    }

    /// Whether version `i` is an SSE-KMS object.
    pub(crate) fn is_kms(&self, i: u64) -> bool {
        self.sse_kms_percent > 0.0 && unit(i, 4) * 100.0 < self.sse_kms_percent
    }

    pub(crate) fn uses_kms(&self) -> bool {
        self.sse_kms_percent > 0.0
    }
}

/// The benchmark's replication configuration: a catch-all rule per destination, plus `extra`
/// prefix rules (higher priority, spread over the destinations) so matching works against a
/// realistic rule count. With SSE-KMS objects, every rule selects them and re-encrypts under
/// the replica key.
pub(crate) fn configuration(
    destinations: u32,
    extra: u32,
    kms: bool,
) -> Result<ReplicationConfiguration, CliError> {
    let sse = if kms {
        r#""SourceSelectionCriteria":{"SseKmsEncryptedObjects":{"Status":"Enabled"}},"#
    } else {
        ""
    };
    let encryption = |d: u32| {
        if kms {
            format!(
                r#"{{"Bucket":"arn:aws:s3:::bench-dst-{d}","EncryptionConfiguration":{{"ReplicaKmsKeyID":"{REPLICA_KMS_KEY}"}}}}"#
            )
        } else {
            format!(r#"{{"Bucket":"arn:aws:s3:::bench-dst-{d}"}}"#)
        }
    };
    let mut rules: Vec<String> = (0..destinations)
        .map(|d| {
            format!(
                r#"{{"ID":"to-{d}","Priority":{d},"Status":"Enabled","Filter":{{}},{sse}"DeleteMarkerReplication":{{"Status":"Enabled"}},"Destination":{}}}"#,
                encryption(d)
            )
        })
        .collect();
    for r in 0..extra {
        let d = r % destinations.max(1);
        rules.push(format!(
            r#"{{"ID":"prefix-{r}","Priority":{},"Status":"Enabled","Filter":{{"Prefix":"bench/{:04}/"}},{sse}"DeleteMarkerReplication":{{"Status":"Enabled"}},"Destination":{}}}"#,
            destinations + r,
            r % 1000,
            encryption(d)
        ));
    }
    let body = format!(
        r#"{{"Role":"arn:aws:iam::123456789012:role/bench","Rules":[{}]}}"#,
        rules.join(",")
    );
    let config = ReplicationConfiguration::parse(body.as_bytes(), None)?;
    config.validate(&s3repl::config::BucketContext::default())?;
    Ok(config)
}

/// The benchmark keyring and one data key: every SSE-KMS object is stored under it (the bytes
/// of equal-sized objects are then identical and encrypted once), its wrap bound to each
/// object's identity as a real server's would be.
pub(crate) struct Kms {
    pub(crate) ring: Arc<FileKeyring>,
    dek: DataKey,
    /// Size → (encrypted stream, BLAKE3 of the plaintext).
    encrypted: Mutex<HashMap<u64, (Bytes, [u8; 32])>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").finish_non_exhaustive()
    }
}

impl Kms {
    pub(crate) fn new() -> Result<Self, CliError> {
        let mut ring = FileKeyring::default();
        ring.insert(SOURCE_KMS_KEY, &[], zeroize::Zeroizing::new([0x5a; 32]))?;
        ring.insert(REPLICA_KMS_KEY, &[], zeroize::Zeroizing::new([0xa5; 32]))?;
        Ok(Kms {
            ring: Arc::new(ring),
            dek: DataKey::generate()?,
            encrypted: Mutex::new(HashMap::new()),
        })
    }

    /// The stored bytes and plaintext digest of an SSE-KMS object of `size` bytes whose
    /// plaintext is `plaintext(0..size)`.
    pub(crate) fn object(
        &self,
        size: u64,
        plaintext: impl Fn(std::ops::Range<u64>) -> Result<Bytes, CliError>,
    ) -> Result<(Bytes, [u8; 32]), CliError> {
        let mut cache = self.encrypted.lock();
        if let Some(hit) = cache.get(&size) {
            return Ok(hit.clone());
        }
        let data = plaintext(0..size)?;
        let mut enc = EncryptStream::new(&self.dek, 65_536)?;
        let mut out = enc.header_bytes().to_vec();
        enc.update(&data, |b| out.extend_from_slice(&b))?;
        out.extend_from_slice(&enc.finish()?);
        let entry = (Bytes::from(out), *blake3::hash(&data).as_bytes());
        cache.insert(size, entry.clone());
        Ok(entry)
    }

    /// The machine's re-encryption rate, measured as one stretch of work: every core at once
    /// decrypting, re-encrypting and hashing (BLAKE3) its own 64 MiB object in place, as the
    /// engine does, in rounds until about `bytes` have been re-encrypted (at least three
    /// rounds). Returns (bytes, seconds): the bench runs it before and after the replication
    /// and compares with both together, so the baseline covers a stretch as long as the run it
    /// brackets (on a shared machine whose speed drifts, a short best-of-N baseline catches a
    /// fast moment the run cannot). Only the copy back to source ciphertext before each round
    /// is untimed.
    pub(crate) fn machine_rate(&self, bytes: u64) -> Result<(u64, f64), CliError> {
        const LEN: u64 = 64 << 20;
        let plain: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let plain = Bytes::from(plain);
        let (stored, _) = self.object(LEN, |_| Ok(plain.clone()))?;
        let replica = DataKey::generate()?;
        // The data key as the engine gets it: unwrapped from a wrap for some identity.
        let id = ObjectIdentity { bucket: "baseline", key: "baseline", version_id: "1" };
        let master = self.ring.master_key(SOURCE_KMS_KEY)?;
        let source =
            self.dek.wrap(&master, id).and_then(|w| w.unwrap_with(self.ring.as_ref(), id))?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let per_round = LEN * cores as u64;
        let rounds = usize::try_from(bytes.div_ceil(per_round)).unwrap_or(usize::MAX).clamp(3, 64);
        let barrier = std::sync::Barrier::new(cores);
        // Per thread: the seconds of each round's re-encryption.
        let run = || -> Result<Vec<f64>, CliError> {
            let mut buf = stored.to_vec();
            let mut times = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                buf.copy_from_slice(&stored);
                barrier.wait();
                let start = std::time::Instant::now();
                let mut re = s3repl::crypto::ReEncryptor::new(&source, &stored, &replica, false)?;
                let body = buf.get_mut(s3repl::crypto::HEADER_LEN..).unwrap_or_default();
                if re.packages_in_place(body, true)? != LEN {
                    return Err(CliError::internal("the re-encryption baseline lost bytes"));
                }
                re.finish()?;
                times.push(start.elapsed().as_secs_f64().max(1e-9));
            }
            Ok(times)
        };
        let per_thread: Vec<Vec<f64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores).map(|_| s.spawn(run)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| CliError::internal("baseline thread panicked"))
                        .and_then(|r| r)
                })
                .collect::<Result<_, _>>()
        })?;
        // A round lasts as long as its slowest thread.
        let seconds: f64 = (0..rounds)
            .map(|r| per_thread.iter().filter_map(|t| t.get(r)).fold(0.0f64, |a, &b| a.max(b)))
            .sum();
        Ok((per_round * rounds as u64, seconds))
    }

    /// Marks `rec` as an SSE-KMS object: the data key wrapped for its identity.
    pub(crate) fn seal_record(
        &self,
        rec: &mut VersionRecord,
        digest: [u8; 32],
    ) -> Result<(), CliError> {
        let master = self.ring.master_key(SOURCE_KMS_KEY)?;
        let id = ObjectIdentity { bucket: &rec.bucket, key: &rec.key, version_id: &rec.version_id };
        let wrapped = self.dek.wrap(&master, id)?;
        rec.sse = SseInfo {
            kind: SseKind::SseKms,
            kms_key_id: Some(SOURCE_KMS_KEY.into()),
            wrapped_dek: Some(wrapped.encode()),
        };
        rec.blake3 = Some(digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lengths_skew_and_tags() {
        let w = Workload::new(None, 0.0, 64, 2, 0.0).unwrap();
        assert_eq!(w.key(7).len(), 64);
        assert_ne!(w.key(7), w.key(8));
        assert_eq!(w.tags(3).len(), 2);
        assert!(!w.is_kms(3));
        // Zipf over 100 keys: the most popular key takes far more than 1/100 of the versions.
        let z = Workload::new(Some(100), 1.2, 0, 0, 0.0).unwrap();
        // Rank 0 is key index 0.
        let hot = (0..10_000).filter(|i| z.key(*i) == "bench/0000/object-0").count();
        assert!(hot > 1_000, "{hot}");
        let u = Workload::new(Some(100), 0.0, 0, 0, 0.0).unwrap();
        let distinct: std::collections::HashSet<String> = (0..10_000).map(|i| u.key(i)).collect();
        assert_eq!(distinct.len(), 100);
        let k = Workload::new(None, 0.0, 0, 0, 25.0).unwrap();
        let share = (0..10_000).filter(|i| k.is_kms(*i)).count();
        assert!((2_000..3_000).contains(&share), "{share}");
        assert!(Workload::new(Some(0), 0.0, 0, 0, 0.0).is_err());
        assert!(Workload::new(None, 0.0, 0, 0, 101.0).is_err());
    }

    #[test]
    fn configurations_validate() {
        assert_eq!(configuration(2, 0, false).unwrap().rules.len(), 2);
        assert_eq!(configuration(2, 998, true).unwrap().rules.len(), 1000);
        assert!(configuration(1, 1000, false).is_err(), "S3 allows 1,000 rules");
    }
}
