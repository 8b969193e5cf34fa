//! Master keys: the [`KeyStore`] trait embedding servers implement over their KMS, and a
//! file-backed keyring for standalone use.
//!
//! Key material lives in [`Zeroizing`] buffers (wiped on drop) and is never printed: `Debug`
//! shows the key id only.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::aead::KEY_LEN;
use crate::error::Error;

/// A 256-bit master key and its canonical id (the KMS key ARN).
#[derive(Clone)]
pub struct MasterKey {
    id: Arc<str>,
    material: Arc<Zeroizing<[u8; KEY_LEN]>>,
}

impl MasterKey {
    /// A key from raw material (wiped when the last clone drops).
    pub fn new(id: impl Into<Arc<str>>, material: Zeroizing<[u8; KEY_LEN]>) -> Self {
        MasterKey { id: id.into(), material: Arc::new(material) }
    }

    /// The canonical key id (a `arn:aws:kms:<region>:<account>:key/<id>` ARN).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn material(&self) -> &[u8; KEY_LEN] {
        &self.material
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Where master keys come from. Embedding servers implement it over their KMS.
///
/// Contract: `master_key` resolves a key ARN or an alias ARN to the key it names, and the
/// returned key's [`MasterKey::id`] is the canonical key ARN (never the alias), so data keys
/// wrapped under an alias still unwrap after the alias moves. Implementations may cache.
pub trait KeyStore: Send + Sync {
    /// The key named by `key_id` (key ARN or alias ARN).
    fn master_key(&self, key_id: &str) -> Result<MasterKey, Error>;

    /// The multi-Region key related to the key `key_id` (a canonical key ARN) in `region`: in
    /// KMS, related multi-Region keys share their key id (`mrk-…`), account and key material
    /// and differ in Region. The default derives that ARN ([`related_multi_region_arn`]) and
    /// resolves it with [`KeyStore::master_key`]; [`Error::NoRelatedKey`] when `key_id` is not
    /// a multi-Region key or the store has no replica of it in `region`.
    fn related_multi_region_key(&self, key_id: &str, region: &str) -> Result<MasterKey, Error> {
        let none = || Error::NoRelatedKey { key_id: key_id.to_owned(), region: region.to_owned() };
        let arn = related_multi_region_arn(key_id, region).ok_or_else(none)?;
        self.master_key(&arn).map_err(|e| match e {
            Error::UnknownKey(_) => none(),
            other => other,
        })
    }
}

/// The ARN of the multi-Region key related to `key_arn` in `region`, when `key_arn` names a
/// multi-Region key (`arn:<partition>:kms:<region>:<account>:key/mrk-<id>`).
pub fn related_multi_region_arn(key_arn: &str, region: &str) -> Option<String> {
    let (kind, id) = split_kms_arn(key_arn)?;
    if kind != "key" || !id.starts_with("mrk-") || !is_region(region) {
        return None;
    }
    let mut parts = key_arn.splitn(6, ':');
    let (arn, partition, kms) = (parts.next()?, parts.next()?, parts.next()?);
    let _source_region = parts.next()?;
    let (account, resource) = (parts.next()?, parts.next()?);
    Some(format!("{arn}:{partition}:{kms}:{region}:{account}:{resource}"))
}

/// A Region name as KMS ARNs carry it (`eu-west-1`): lower-case letters, digits and dashes.
fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The on-disk keyring: JSON, owner-only permissions.
///
/// ```json
/// {"keys": [{"id": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-…",
///            "aliases": ["arn:aws:kms:us-east-1:111122223333:alias/replicas"],
///            "material_hex": "<64 hex digits>"},
///           {"id": "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd…",
///            "replica_regions": ["eu-west-1"],
///            "material_hex": "<64 hex digits>"}]}
/// ```
///
/// `replica_regions` makes a multi-Region key (its id must be `key/mrk-…`): the key is also
/// known under its ARN in each listed Region, with the same material, as KMS's related
/// multi-Region keys are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    keys: Vec<KeyringEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringEntry {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    replica_regions: Vec<String>,
    material_hex: Zeroizing<String>,
}

/// A keyring loaded from a file (see [`FileKeyring::open`] for the format).
#[derive(Clone, Default)]
pub struct FileKeyring {
    keys: HashMap<String, MasterKey>,
}

impl fmt::Debug for FileKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.keys.values().map(MasterKey::id).collect();
        ids.sort_unstable();
        ids.dedup();
        f.debug_struct("FileKeyring").field("keys", &ids).finish()
    }
}

fn keyring_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Keyring { path: path.to_owned(), reason: reason.into() }
}

impl FileKeyring {
    /// Loads a keyring file. Refuses a file that group or others can read or write.
    ///
    /// Format: `{"keys":[{"id":"<key ARN>","aliases":["<alias ARN>"],"material_hex":"<64 hex>"}]}`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        check_owner_only(path)?;
        let bytes =
            Zeroizing::new(std::fs::read(path).map_err(|e| keyring_error(path, e.to_string()))?);
        // Syntax errors name positions only; a data error can quote a value (key material
        // given as a number, say), so it says where, never what.
        let file: KeyringFile = serde_json::from_slice(&bytes).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => format!(
                    "line {}, column {}: an entry is not a key of the expected form (not shown: it may hold key material)",
                    e.line(),
                    e.column()
                ),
                _ => e.to_string(),
            };
            keyring_error(path, what)
        })?;
        let mut ring = FileKeyring::default();
        for entry in file.keys {
            let mut material = Zeroizing::new([0u8; KEY_LEN]);
            hex::decode_to_slice(entry.material_hex.trim(), &mut material[..]).map_err(|_| {
                keyring_error(
                    path,
                    format!("key {:?}: material_hex must be 64 hex digits", entry.id),
                )
            })?;
            for region in &entry.replica_regions {
                let replica = related_multi_region_arn(&entry.id, region).ok_or_else(|| {
                    keyring_error(
                        path,
                        format!(
                            "key {:?}: replica_regions needs a multi-Region key id (key/mrk-…) and Region names, got {region:?}",
                            entry.id
                        ),
                    )
                })?;
                ring.insert(&replica, &[], material.clone())
                    .map_err(|e| keyring_error(path, e.to_string()))?;
            }
            ring.insert(&entry.id, &entry.aliases, material)
                .map_err(|e| keyring_error(path, e.to_string()))?;
        }
        Ok(ring)
    }

    /// Adds a key under its id and aliases.
    pub fn insert(
        &mut self,
        id: &str,
        aliases: &[String],
        material: Zeroizing<[u8; KEY_LEN]>,
    ) -> Result<(), Error> {
        if !is_key_arn(id) {
            return Err(Error::KeyName(format!(
                "{id:?} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)"
            )));
        }
        let key = MasterKey::new(id, material);
        for name in std::iter::once(id).chain(aliases.iter().map(String::as_str)) {
            if name != id && !is_alias_arn(name) {
                return Err(Error::KeyName(format!("{name:?} is not a KMS alias ARN")));
            }
            if self.keys.insert(name.to_owned(), key.clone()).is_some() {
                return Err(Error::KeyName(format!("{name:?} is defined twice")));
            }
        }
        Ok(())
    }

    /// Writes a new keyring file (mode 0600) with one fresh random key per id; for standalone
    /// setups and benchmarks.
    pub fn generate(path: &Path, ids: &[&str]) -> Result<Self, Error> {
        // Sized up front so the buffer holding hex material never reallocates (a reallocation
        // would leave an unwiped copy behind).
        let capacity = 16 + ids.iter().map(|id| id.len() + 2 * KEY_LEN + 48).sum::<usize>();
        let mut out = Zeroizing::new(String::with_capacity(capacity));
        out.push_str("{\"keys\":[");
        let mut ring = FileKeyring::default();
        for (i, id) in ids.iter().enumerate() {
            let material = random_key()?;
            if i > 0 {
                out.push(',');
            }
            let hex = Zeroizing::new(hex::encode(&material[..]));
            out.push_str("{\"id\":");
            out.push_str(&serde_json::Value::from(*id).to_string());
            out.push_str(",\"material_hex\":\"");
            out.push_str(&hex);
            out.push_str("\"}");
            ring.insert(id, &[], material).map_err(|e| keyring_error(path, e.to_string()))?;
        }
        out.push_str("]}\n");
        write_owner_only(path, out.as_bytes()).map_err(|e| keyring_error(path, e.to_string()))?;
        Ok(ring)
    }
}

impl KeyStore for FileKeyring {
    fn master_key(&self, key_id: &str) -> Result<MasterKey, Error> {
        self.keys.get(key_id).cloned().ok_or_else(|| Error::UnknownKey(key_id.to_owned()))
    }
}

fn split_kms_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("kms"), Some(region), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let ok = partition.starts_with("aws")
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| resource.split_once('/')).flatten()
}

/// `arn:<partition>:kms:<region>:<account>:key/<id>`.
pub fn is_key_arn(s: &str) -> bool {
    split_kms_arn(s).is_some_and(|(kind, id)| kind == "key" && !id.is_empty())
}

/// `arn:<partition>:kms:<region>:<account>:alias/<name>`.
pub fn is_alias_arn(s: &str) -> bool {
    split_kms_arn(s).is_some_and(|(kind, id)| kind == "alias" && !id.is_empty())
}

/// 32 bytes from the OS random number generator.
pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, Error> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut k[..]).map_err(|e| Error::Random(e.to_string()))?;
    Ok(k)
}

#[cfg(unix)]
fn check_owner_only(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| keyring_error(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyringPermissions { path: PathBuf::from(path), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path) -> Result<(), Error> {
    Ok(())
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "s3repl-keys-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        u64::from_le_bytes(b)
    }

    #[test]
    fn generated_keyring_loads_and_resolves_aliases() {
        let d = dir();
        let path = d.join("keys.json");
        let ring = FileKeyring::generate(&path, &[KEY]).unwrap();
        let loaded = FileKeyring::open(&path).unwrap();
        assert_eq!(
            loaded.master_key(KEY).unwrap().material(),
            ring.master_key(KEY).unwrap().material()
        );
        assert!(matches!(
            loaded.master_key("arn:aws:kms:us-east-1:111122223333:key/other"),
            Err(Error::UnknownKey(_))
        ));
        let alias = "arn:aws:kms:us-east-1:111122223333:alias/replicas".to_owned();
        let mut ring = FileKeyring::default();
        ring.insert(KEY, std::slice::from_ref(&alias), Zeroizing::new([7; 32])).unwrap();
        assert_eq!(
            ring.master_key(&alias).unwrap().id(),
            KEY,
            "aliases resolve to the canonical id"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_keyring_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir();
        let path = d.join("keys.json");
        FileKeyring::generate(&path, &[KEY]).unwrap();
        for mode in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = FileKeyring::open(&path).unwrap_err();
            assert!(matches!(e, Error::KeyringPermissions { mode: m, .. } if m == mode), "{e}");
            assert!(e.to_string().contains("chmod 600"));
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn debug_and_errors_never_show_material() {
        let material = [0xAB; 32];
        let key = MasterKey::new(KEY, Zeroizing::new(material));
        let mut ring = FileKeyring::default();
        ring.insert(KEY, &[], Zeroizing::new(material)).unwrap();
        let shown = format!("{key:?} {ring:?}");
        assert!(shown.contains(KEY));
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn bad_keyring_files_get_clear_errors() {
        let d = dir();
        let path = d.join("bad.json");
        write_owner_only(&path, br#"{"keys":[{"id":"not-an-arn","material_hex":"00"}]}"#).unwrap();
        let e = FileKeyring::open(&path).unwrap_err().to_string();
        assert!(e.contains("64 hex digits") || e.contains("not a KMS key ARN"), "{e}");
        // Key material of the wrong type: where, never what.
        let path = d.join("bad-type.json");
        write_owner_only(&path, br#"{"keys":[{"id":"x","material_hex":98765432109876}]}"#).unwrap();
        let e = FileKeyring::open(&path).unwrap_err().to_string();
        assert!(!e.contains("98765432109876") && e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn multi_region_keys_resolve_their_replicas_and_nothing_else() {
        const MRK: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd";
        let d = dir();
        let path = d.join("mrk.json");
        let body = format!(
            r#"{{"keys":[{{"id":"{MRK}","replica_regions":["eu-west-1"],"material_hex":"{}"}},{{"id":"{KEY}","material_hex":"{}"}}]}}"#,
            "ab".repeat(32),
            "cd".repeat(32)
        );
        write_owner_only(&path, body.as_bytes()).unwrap();
        let ring = FileKeyring::open(&path).unwrap();
        let replica = ring.related_multi_region_key(MRK, "eu-west-1").unwrap();
        assert_eq!(replica.id(), "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd");
        assert_eq!(replica.material(), ring.master_key(MRK).unwrap().material());
        assert_eq!(ring.related_multi_region_key(MRK, "us-east-1").unwrap().id(), MRK);
        for (key, region) in [(MRK, "ap-south-1"), (KEY, "eu-west-1"), (MRK, "EU")] {
            assert!(
                matches!(
                    ring.related_multi_region_key(key, region),
                    Err(Error::NoRelatedKey { .. })
                ),
                "{key} in {region}"
            );
        }
        // Replicas of a single-Region key are refused when the keyring is read.
        let path = d.join("not-mrk.json");
        let body = format!(
            r#"{{"keys":[{{"id":"{KEY}","replica_regions":["eu-west-1"],"material_hex":"{}"}}]}}"#,
            "ab".repeat(32)
        );
        write_owner_only(&path, body.as_bytes()).unwrap();
        let e = FileKeyring::open(&path).unwrap_err().to_string();
        assert!(e.contains("multi-Region key id"), "{e}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn arn_forms() {
        assert!(is_key_arn(KEY));
        assert!(is_alias_arn("arn:aws:kms:eu-west-1:111122223333:alias/a/b"));
        assert!(!is_key_arn("arn:aws:kms:eu-west-1:111122223333:alias/a"));
        assert!(!is_key_arn("arn:aws:s3:::bucket"));
        assert!(!is_key_arn("1234abcd"));
    }
}
