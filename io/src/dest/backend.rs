//! The one trait every kind of destination implements, and where a new kind goes.
//!
//! A [`Destination`](super::Destination) is an ARN over an `Arc<dyn Backend>`; what all kinds
//! share (refusing what a kind cannot keep before anything is sent, the replica's metadata
//! names) stays in the destination, what differs is a backend's:
//!
//! | Backend | File | Kinds |
//! |---|---|---|
//! | [`StoreBackend`](super::store::StoreBackend) | `store.rs` | any `object_store` store: memory, GCS, Azure Blob, an embedder's own |
//! | [`LocalBackend`](super::local::LocalBackend) | `local.rs` | a local file system: shared writer threads, `syncfs`, staging files swept at start |
//! | [`S3Backend`](super::s3::S3Backend) | `s3.rs` (+ `server_side.rs`, `signed/`) | an S3-compatible bucket: signed calls, Object Lock at creation, ACLs, exact keys, server-side copies, journaled uploads |
//!
//! A new kind of destination is a new file with a type implementing [`Backend`], and a
//! constructor on `Destination` that wraps it. The methods with defaults are what most kinds
//! do not have (versions hidden by delete markers, per-version settings, server-side copies,
//! uploads that outlive the process, a cache to flush).

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

use super::{
    CopyPlan, CopySource, CurrentReplica, DestinationError, MultipartWrite, OpenUpload, PutOutcome,
    ReplicaMeta, S3Location, UploadJournal, VersionSettings, metadata::MetadataNames,
};

/// The user-metadata entry that names the source version a replica is of (the engine's record
/// schema defines the name; this crate only compares it).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The entry's name, e.g. `s3repl-source-version-id`.
    pub name: &'a str,
    /// The value the replica must carry.
    pub value: &'a str,
}

/// What one kind of destination does. Every method that fails reports a [`DestinationError`]
/// naming the destination, the operation and, for a refusal, why.
#[async_trait::async_trait]
pub(crate) trait Backend: std::fmt::Debug + Send + Sync {
    /// The store replicas are read back through (verification, tests).
    fn store(&self) -> &Arc<dyn ObjectStore>;

    /// Whether the store keeps user metadata and content headers (a local file system does
    /// not: its replicas are written without them, and replays cannot read a stamp there).
    fn keeps_metadata(&self) -> bool;

    /// How the store spells user-metadata names.
    fn names(&self) -> MetadataNames {
        MetadataNames::AsIs
    }

    /// Whether the store keeps Object Lock retention and legal holds (S3 only); elsewhere a
    /// locked replica is refused before anything is written.
    fn keeps_object_lock(&self) -> bool {
        false
    }

    /// Whether this is a local file system (whose staging files the engine sweeps at start).
    fn is_local(&self) -> bool {
        false
    }

    /// Writes one replica in a single request. Metadata the store cannot carry has been
    /// refused already.
    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &ReplicaMeta,
    ) -> Result<PutOutcome, DestinationError>;

    /// Starts a multipart upload of one replica.
    async fn start_multipart(
        &self,
        key: &str,
        meta: &ReplicaMeta,
    ) -> Result<MultipartWrite, DestinationError>;

    /// Writes a delete marker (on unversioned stores: removes the object); a key that is not
    /// there is no error. The marker's version id, where the store names it.
    async fn delete_marker(&self, key: &str) -> Result<Option<String>, DestinationError>;

    /// One HEAD of `key` (at `version`, else its current version) with its user-metadata
    /// entry `name`: `None` when there is no such object.
    async fn head(
        &self,
        key: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<Option<CurrentReplica>, DestinationError>;

    /// The newest version of `key` below its current delete marker(s), with its entry `name`
    /// (`None` where the store keeps no hidden versions).
    async fn hidden_replica(
        &self,
        _key: &str,
        _name: &str,
    ) -> Result<Option<CurrentReplica>, DestinationError> {
        Ok(None)
    }

    /// Applies per-version `settings` to `version` of `key` (ACL, tags, Object Lock) where the
    /// store has calls for them; nothing to do elsewhere.
    async fn apply(
        &self,
        _key: &str,
        _version: Option<&str>,
        _settings: &VersionSettings<'_>,
    ) -> Result<(), DestinationError> {
        Ok(())
    }

    /// Gives the replica stamped `stamp` (at `replica_version` when known) the changed
    /// `settings`; returns the version updated. Called only on stores that keep metadata.
    async fn sync_metadata(
        &self,
        key: &str,
        stamp: Stamp<'_>,
        replica_version: Option<&str>,
        settings: &VersionSettings<'_>,
    ) -> Result<Option<String>, DestinationError>;

    /// Whether versions at `location` can be copied here by the server itself.
    fn copies_from(&self, _location: &S3Location) -> bool {
        false
    }

    /// A server-side copy of `src` (see `Destination::copy_from`); `None`: copy the bytes.
    async fn copy_from(
        &self,
        _key: &str,
        _src: &CopySource<'_>,
        _meta: &ReplicaMeta,
        _plan: CopyPlan,
    ) -> Result<Option<PutOutcome>, DestinationError> {
        Ok(None)
    }

    /// Journals the uploads this backend opens from now on (those that can outlive the
    /// process).
    fn journal_uploads(&self, _journal: &Arc<UploadJournal>) {}

    /// Aborts an upload a previous run left open.
    async fn abort_left_open(&self, _upload: &OpenUpload) -> Result<(), DestinationError> {
        Ok(())
    }

    /// Removes what a killed process left half-written before `before`; how many.
    fn remove_orphaned_staging(&self, _before: std::time::SystemTime) -> std::io::Result<usize> {
        Ok(0)
    }

    /// Whether the store answers (see [`super::Destination::probe`]): one HEAD of a key
    /// replicas do not use; any answer but a transient failure is an answer.
    async fn probe(&self) -> Result<(), DestinationError> {
        let key = super::metadata::PROBE_KEY;
        match self.head(key, key, None).await {
            Err(e) if e.is_retryable() => Err(e),
            Ok(_) | Err(_) => Ok(()),
        }
    }

    /// Makes every replica written so far durable, where the store does not itself.
    fn sync(&self) -> Result<(), DestinationError> {
        Ok(())
    }
}
