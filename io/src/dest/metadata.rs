//! Reading what a destination holds (the current replica, a hidden replica version) and
//! changing a replica's metadata in place (tags, ACL, Object Lock), and how stores spell
//! metadata names.

use object_store::{Attribute, PutOptions, PutPayload, TagSet};

use super::{Destination, DestinationError, Operation, Refusal, VersionSettings, signed};

/// How a store spells user-metadata names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetadataNames {
    /// As given (S3, GCS, memory).
    AsIs,
    /// As identifiers (Azure Blob: letters, digits and `_`, not starting with a digit): every
    /// other character becomes `_`, so `s3repl-source-seq` is `s3repl_source_seq` there. Two
    /// names differing only in such characters (`a-b`, `a_b`) collide; the later one wins.
    Identifiers,
}

impl MetadataNames {
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
        if !self.keeps_metadata {
            return Ok(Some(CurrentReplica::default()));
        }
        self.head(key, name, None).await
    }

    /// One HEAD of `key` (at `version`, else its current version): `None` when there is no
    /// such object.
    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        if let Some(s3) = &self.s3 {
            let answer = s3
                .head_object(key, version.as_deref())
                .await
                .map_err(|e| self.signed_failure(e, Operation::Head, Refusal::BucketNotFound))?;
            return Ok(answer.map(|headers| CurrentReplica {
                value: signed::answer_header(&headers, &format!("x-amz-meta-{name}")),
                version: version.or_else(|| signed::answer_header(&headers, "x-amz-version-id")),
            }));
        }
        let fail = |e| DestinationError::classify(&self.arn, Operation::Head, e);
        let path = self.store_path(key).map_err(fail)?;
        let opts = object_store::GetOptions {
            head: true,
            version: version.clone(),
            ..object_store::GetOptions::default()
        };
        match self.store.get_opts(&path, opts).await {
            Ok(r) => Ok(Some(CurrentReplica {
                value: self.metadata(&r.attributes, name),
                version: version.or(r.meta.version),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
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
        let Some(s3) = &self.s3 else { return Ok(None) };
        let version = s3.newest_version(key).await.map_err(|e| {
            // A failed listing only means the replay cannot tell yet: retry it.
            let destination = self.arn.to_string();
            let source = object_store::Error::Generic { store: "S3", source: Box::new(e) };
            DestinationError::Transient { destination, source }
        })?;
        let Some(version) = version else { return Ok(None) };
        self.head(key, name, Some(version)).await
    }

    /// Metadata-only replication: gives the replica of source version `source_version_id`
    /// the changed `settings` (tags, ACL, retention, legal hold); returns the destination
    /// version updated.
    ///
    /// With `replica_version` (the version the destination minted for that replica, from the
    /// engine's version map) the settings go to exactly that version on S3, current or not.
    /// Without it, the replica must be the key's current version, identified by its
    /// `s3repl-source-version-id` stamp. On stores without versions a tag change rewrites the
    /// object with the new tags; stores that keep no metadata have no tags to update. ACLs
    /// exist on S3 destinations only; Object Lock protection anywhere else is refused.
    pub async fn sync_metadata(
        &self,
        key: &str,
        source_version_id: &str,
        replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError> {
        self.check_settings(key, settings)?;
        if !self.keeps_metadata {
            return Ok(None);
        }
        if let (Some(_), Some(v)) = (&self.s3, replica_version) {
            self.apply(key, Some(v), settings).await?;
            return Ok(Some(v.to_owned()));
        }
        let fail = |e| DestinationError::classify(&self.arn, Operation::PutTagging, e);
        let missing = |what: &str| DestinationError::Permanent {
            destination: self.arn.to_string(),
            operation: Operation::PutTagging,
            refusal: Refusal::VersionNotFound,
            source: object_store::Error::NotFound {
                path: key.to_owned(),
                source: what.to_owned().into(),
            },
        };
        if self.s3.is_some() {
            // Only the current version's stamp and id are needed: one HEAD.
            let stamp = "s3repl-source-version-id";
            let current = self.head(key, stamp, None).await?;
            let Some(current) = current else { return Err(missing("no current replica")) };
            if current.value.as_deref() != Some(source_version_id) {
                return Err(missing("the current replica is not this source version"));
            }
            self.apply(key, current.version.as_deref(), settings).await?;
            return Ok(current.version);
        }
        let path = self.store_path(key).map_err(fail)?;
        // A rewrite needs the bytes.
        let current = match self.store.get_opts(&path, object_store::GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(missing("no current replica")),
            Err(e) => return Err(fail(e)),
        };
        let stamp = self.metadata(&current.attributes, "s3repl-source-version-id");
        if stamp.as_deref() != Some(source_version_id) {
            return Err(missing("the current replica is not this source version"));
        }
        let version = current.meta.version.clone();
        let Some(tags) = settings.tags else { return Ok(version) };
        // A store without per-version tagging: rewrite the object with the new tags.
        let attributes = current.attributes.clone();
        let data = current.bytes().await.map_err(fail)?;
        let mut tag_set = TagSet::default();
        for (k, v) in tags {
            tag_set.push(k, v);
        }
        let opts = PutOptions { attributes, tags: tag_set, ..PutOptions::default() };
        let r =
            self.store.put_opts(&path, PutPayload::from_bytes(data), opts).await.map_err(fail)?;
        Ok(r.version)
    }
}
