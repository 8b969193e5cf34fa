//! Conformance checks every destination implementation must pass; run them against each
//! backend (in memory and local in unit tests; S3-compatible servers in end-to-end tests).

use super::{Destination, DestinationError, ReplicaMeta};
use bytes::Bytes;
use object_store::ObjectStoreExt;

/// A replica reads back byte for byte; a second PUT of the same key replaces it; a delete
/// marker removes it; deleting again is not an error.
pub async fn put_get_delete(d: &Destination) -> Result<(), String> {
    let key = "conformance/a b/é.bin";
    let meta = ReplicaMeta {
        user_metadata: vec![("s3repl-replication-status".into(), "REPLICA".into())],
        ..ReplicaMeta::default()
    };
    d.put(key, Bytes::from_static(b"first"), &meta).await.map_err(|e| e.to_string())?;
    let second = d
        .put(key, Bytes::from_static(b"second version"), &meta)
        .await
        .map_err(|e| e.to_string())?;
    let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
    let got = read_back(d, &path).await?;
    if &got[..] != b"second version" {
        return Err(format!("read back {got:?}"));
    }
    let marker = d.delete_marker(key).await.map_err(|e| e.to_string())?;
    if d.store().head(&path).await.is_ok() {
        return Err("the object survived its delete marker".into());
    }
    // A versioning target names the marker it created, as it named the version.
    if second.version_id.is_some() && (marker.is_none() || marker == second.version_id) {
        return Err(format!("delete marker version {marker:?} after {:?}", second.version_id));
    }
    if d.keeps_metadata() {
        let current = d.current_replica(key, "s3repl-replication-status").await;
        if current.map_err(|e| e.to_string())?.is_some() {
            return Err("a deleted key still has a current replica".into());
        }
    }
    d.delete_marker(key).await.map_err(|e| e.to_string()).map(|_| ())
}

async fn read_back(d: &Destination, path: &object_store::path::Path) -> Result<Bytes, String> {
    let got = d.store().get(path).await.map_err(|e| e.to_string())?;
    got.bytes().await.map_err(|e| e.to_string())
}

/// Parts upload concurrently and complete into one object in order; an aborted upload
/// leaves no object behind.
pub async fn multipart(d: &Destination) -> Result<(), String> {
    let key = "conformance/multipart";
    let meta = ReplicaMeta::default();
    let mut up = d.start_multipart(key, &meta).await.map_err(|e| e.to_string())?;
    let first = up.put_part(Bytes::from(vec![b'a'; 5 << 20]));
    let second = up.put_part(Bytes::from_static(b"tail"));
    // Finishing the second part first must not reorder the object.
    second.await.map_err(|e| e.to_string())?;
    first.await.map_err(|e| e.to_string())?;
    up.complete().await.map_err(|e| e.to_string())?;
    let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
    let got = read_back(d, &path).await?;
    if got.len() != (5 << 20) + 4 || !got.ends_with(b"tail") || got.first() != Some(&b'a') {
        return Err(format!("multipart object of {} bytes", got.len()));
    }
    let aborted = "conformance/aborted";
    let mut up = d.start_multipart(aborted, &meta).await.map_err(|e| e.to_string())?;
    up.put_part(Bytes::from_static(b"part")).await.map_err(|e| e.to_string())?;
    up.abort().await.map_err(|e| e.to_string())?;
    let path = object_store::path::Path::parse(aborted).map_err(|e| e.to_string())?;
    if d.store().head(&path).await.is_ok() {
        return Err("an aborted upload left an object".into());
    }
    Ok(())
}

/// Keys an `object_store` path cannot hold unchanged (a folder marker `…/folder/`, an
/// empty segment `a//b`), written whole or as a multipart upload, are either stored under
/// exactly their own name or refused as a permanent failure: never written under another
/// name (`Path` would make `…/folder/` into `…/folder`).
pub async fn exact_keys(d: &Destination) -> Result<(), String> {
    let stamp = "s3repl-source-seq";
    let meta =
        ReplicaMeta { user_metadata: vec![(stamp.into(), "0:1".into())], ..ReplicaMeta::default() };
    let found = async |key: &str| -> Result<(), String> {
        if !d.keeps_metadata() {
            return Ok(());
        }
        // Present (its metadata may not be: SeaweedFS makes `…/` keys directories, which
        // keep none).
        match d.current_replica(key, stamp).await.map_err(|e| e.to_string())? {
            Some(_) => Ok(()),
            None => Err(format!("{key:?} is not there under its own name")),
        }
    };
    let refused = |key: &str, e: DestinationError| match e {
        DestinationError::Permanent { .. } => Ok(()),
        e => Err(format!("{key:?}: {e}")),
    };
    let mut written = Vec::new();
    for key in ["conformance/folder/", "conformance/a//b"] {
        match d.put(key, Bytes::new(), &meta).await {
            Ok(_) => written.push(key),
            Err(e) => refused(key, e)?,
        }
    }
    let key = "conformance/parts/";
    match d.start_multipart(key, &meta).await {
        Ok(mut up) => {
            up.put_part(Bytes::from_static(b"one part")).await.map_err(|e| e.to_string())?;
            up.complete().await.map_err(|e| e.to_string())?;
            written.push(key);
        }
        Err(e) => refused(key, e)?,
    }
    for stripped in ["conformance/folder", "conformance/parts"] {
        let path = object_store::path::Path::parse(stripped).map_err(|e| e.to_string())?;
        if d.store().head(&path).await.is_ok() {
            return Err(format!("{stripped}/ was written as {stripped}"));
        }
    }
    for key in written {
        found(key).await?;
        d.delete_marker(key).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Metadata written with a replica is kept, where the destination keeps metadata.
pub async fn metadata_kept(d: &Destination) -> Result<(), String> {
    if !d.keeps_metadata() {
        return Ok(());
    }
    let key = "conformance/meta";
    let meta = ReplicaMeta {
        user_metadata: vec![("source-version-id".into(), "v1".into())],
        ..ReplicaMeta::default()
    };
    d.put(key, Bytes::from_static(b"x"), &meta).await.map_err(|e| e.to_string())?;
    let path = object_store::path::Path::parse(key).map_err(|e| e.to_string())?;
    let r = d.store().get(&path).await.map_err(|e| e.to_string())?;
    let found = d.metadata(&r.attributes, "source-version-id");
    if found.as_deref() == Some("v1") {
        Ok(())
    } else {
        Err(format!("metadata read back as {found:?}"))
    }
}
