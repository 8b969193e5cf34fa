//! Reading what a destination holds (the current replica, a hidden replica version) and
//! changing a replica's metadata in place (tags, ACL, Object Lock), and how stores spell
//! metadata names.

use object_store::Attribute;

use super::{Destination, DestinationError, Stamp, VersionSettings};

/// The key [`Destination::probe`] asks for (a name under the engine's own prefix, which no
/// replica needs to exist).
pub(super) const PROBE_KEY: &str = "s3repl-probe/health";

/// How a store spells user-metadata names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetadataNames {
    /// As given (S3, GCS, memory).
    AsIs,
    /// As identifiers (Azure Blob: letters, digits and `_`, not starting with a digit): every
    /// other character becomes `_`, so `s3repl-source-seq` is `s3repl_source_seq` there. Two
    /// names differing only in such characters (`a-b`, `a_b`) collide; the later one wins.
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    Identifiers,
}

impl MetadataNames {
    /// `name` as this store spells it (borrowed names stay borrowed where they are spelled as
    /// given: the clone of a borrowed `Cow` is what saves the allocation, hence the `&Cow`).
    #[allow(clippy::ptr_arg)]
    pub(super) fn spell_name(
        self,
        name: &std::borrow::Cow<'static, str>,
    ) -> std::borrow::Cow<'static, str> {
        match self {
            MetadataNames::AsIs => name.clone(),
            MetadataNames::Identifiers => self.spell(name).into(),
        }
    }

    pub(super) fn spell(self, name: &str) -> String {
        match self {
            MetadataNames::AsIs => name.to_owned(),
            MetadataNames::Identifiers => {
                let mut out: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                    .collect();
                if out.chars().next().is_none_or(|c| c.is_ascii_digit()) {
                    out.insert(0, '_');
                }
                out
            }
        }
    }
}

/// The user-metadata entry `name` among `attributes`.
pub(super) fn metadata_entry(attributes: &object_store::Attributes, name: &str) -> Option<String> {
    attributes.iter().find_map(|(k, v)| match k {
        Attribute::Metadata(m) if m.as_ref() == name => Some(v.as_ref().to_owned()),
        _ => None,
    })
}

/// What a HEAD found as a key's current replica ([`Destination::current_replica`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentReplica {
    /// The requested user-metadata entry (`None`: the object has none, or the store keeps no
    /// metadata and so cannot tell).
    pub value: Option<String>,
    /// The current version's id, where the store versions.
    pub version: Option<String>,
}

impl Destination {
    /// The current replica of `key` (one HEAD request) with its user-metadata entry `name`:
    /// `None` when the key has no current object (absent, or a delete marker). Stores that keep
    /// no metadata cannot tell, and answer an empty [`CurrentReplica`] without asking. Used to
    /// recognise replays after a crash without writing twice.
    pub async fn current_replica(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        if !self.backend.keeps_metadata() {
            return Ok(Some(CurrentReplica::default()));
        }
        let _slot = self.throttle.request().await;
        self.backend.head(key, name, None).await
    }

    /// Whether the destination answers at all: one HEAD of a key replicas do not use. Any
    /// answer but a transient failure is an answer (a 404, or a refusal: a permissions
    /// problem is not an outage, and the operations themselves then fail with its reason);
    /// a refused or reset connection, a timeout or a server error is the destination being
    /// down. Every kind is asked; a local file system is written to instead (a file of its
    /// own, synced and removed): it is down when it has no room.
    pub async fn probe(&self) -> Result<(), DestinationError> {
        self.backend.probe().await
    }

    /// The newest version of `key` below its current delete marker(s), with its user-metadata
    /// entry `name` (one `ListObjectVersions` and one HEAD; S3 targets only, `None` elsewhere
    /// or when the key has no version). Used on replay to find a replica that a later delete
    /// marker hides.
    pub async fn hidden_replica(
        &self,
        key: &str,
        name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        let _slot = self.throttle.request().await;
        self.backend.hidden_replica(key, name).await
    }

    /// Metadata-only replication: gives the replica carrying `stamp` (the user-metadata entry
    /// naming its source version) the changed `settings` (tags, ACL, retention, legal hold);
    /// returns the destination version updated.
    ///
    /// With `replica_version` (the version the destination minted for that replica, from the
    /// engine's version map) the settings go to exactly that version on S3, current or not.
    /// Without it, the replica must be the key's current version, identified by its stamp.
    /// On stores without versions a tag change rewrites the object with the new tags; stores
    /// that keep no metadata have no tags to update. ACLs exist on S3 destinations only;
    /// Object Lock protection anywhere else is refused.
    pub async fn sync_metadata(
        &self,
        key: &str,
        stamp: Stamp<'_>,
        replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        self.check_settings(key, settings)?;
        if !self.backend.keeps_metadata() {
            return Ok(None);
        }
        let _slot = self.throttle.request().await;
        self.backend.sync_metadata(key, stamp, replica_version, settings).await
    }
}
