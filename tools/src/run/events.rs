//! AWS S3 event notification messages (`Records[]`), as `MinIO`'s webhook and Kafka targets and
//! Ceph RGW's push endpoints send them: parsed into the events intake appends, or refused with
//! the reason. Pure functions (the fuzz target calls [`parse_delivery`]).

use serde::Deserialize;

/// What an event asks of replication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `ObjectCreated:*`: a new version.
    Created,
    /// `ObjectRemoved:DeleteMarkerCreated`: a delete marker.
    DeleteMarker,
    /// `ObjectTagging:Put` or `:Delete`: the version's tags changed.
    Tagging,
    /// `ObjectAcl:Put`: the version's ACL changed.
    Acl,
    /// `MinIO`'s `ObjectCreated:PutRetention`: the version's retention changed.
    Retention,
    /// `MinIO`'s `ObjectCreated:PutLegalHold`: the version's legal hold changed.
    LegalHold,
    /// Nothing to replicate (a version delete, a restore, a read, ...): the reason.
    Skipped(String),
}

/// One event of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) bucket: String,
    /// The key, URL-decoded.
    pub(crate) key: String,
    pub(crate) kind: Kind,
    pub(crate) version_id: String,
    pub(crate) size: Option<u64>,
    pub(crate) etag: Option<String>,
    /// The sequencer, upper-case hex left-padded with zeros to [`SEQUENCER_WIDTH`] digits so
    /// that byte order is S3's order for one key (empty when the sender gave none).
    pub(crate) sequencer: String,
}

/// Sequencers are padded to this many hex digits (S3's are 18; longer ones are kept whole).
pub(crate) const SEQUENCER_WIDTH: usize = 32;

#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "Records")]
    records: Vec<Record>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectEntity {
    key: String,
    size: Option<u64>,
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// Parses one delivery. A body that is not a `Records[]` message, or any event that cannot be
/// replicated as sent (no version id, a key that does not decode, a bad sequencer), refuses
/// the whole delivery: nothing of it is appended, and the sender retries or reports it.
pub(crate) fn parse_delivery(body: &[u8]) -> Result<Vec<Event>, String> {
    let delivery: Delivery = serde_json::from_slice(body)
        .map_err(|e| format!("not an S3 event notification (Records[]): {e}"))?;
    delivery
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| event(r).map_err(|e| format!("record {i}: {e}")))
        .collect()
}

fn event(r: Record) -> Result<Event, String> {
    let name = r.event_name.strip_prefix("s3:").unwrap_or(&r.event_name);
    let kind = match name.split_once(':') {
        // `MinIO` files metadata changes under `ObjectCreated` (its own names; AWS and Ceph use
        // `ObjectTagging:*`): they are no new version.
        Some(
            ("ObjectCreated", "PutTagging" | "DeleteTagging") | ("ObjectTagging", "Put" | "Delete"),
        ) => Kind::Tagging,
        Some(("ObjectCreated", "PutRetention")) => Kind::Retention,
        Some(("ObjectCreated", "PutLegalHold")) => Kind::LegalHold,
        Some(("ObjectCreated", _)) => Kind::Created,
        Some(("ObjectRemoved", "DeleteMarkerCreated")) => Kind::DeleteMarker,
        Some(("ObjectRemoved", _)) => {
            Kind::Skipped("a version delete (S3 never replicates those)".into())
        }
        Some(("ObjectAcl", "Put")) => Kind::Acl,
        _ => Kind::Skipped(format!("event {name} changes nothing replication copies")),
    };
    let bucket = r.s3.bucket.name;
    if bucket.is_empty() {
        return Err("no bucket name".into());
    }
    let key = url_decode(&r.s3.object.key)?;
    if key.is_empty() {
        return Err("no object key".into());
    }
    let version_id = r.s3.object.version_id.unwrap_or_default();
    if version_id.is_empty() && !matches!(kind, Kind::Skipped(_)) {
        return Err(format!(
            "{name} of {key:?} has no versionId: replication needs a versioned source bucket"
        ));
    }
    let sequencer = match r.s3.object.sequencer.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(s) if s.bytes().all(|b| b.is_ascii_hexdigit()) && s.len() <= 64 => {
            format!("{:0>SEQUENCER_WIDTH$}", s.to_ascii_uppercase())
        }
        Some(s) => return Err(format!("sequencer {s:?} is not hexadecimal")),
    };
    Ok(Event {
        bucket,
        key,
        kind,
        version_id,
        size: r.s3.object.size,
        etag: r.s3.object.e_tag.filter(|e| !e.is_empty()),
        sequencer,
    })
}

/// Decodes an event's key: `%XX` escapes and `+` for a space (as AWS writes keys in events).
pub(crate) fn url_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("key {s:?} has a bad %-escape at byte {i}"))?;
                out.push(hex);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("key {s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn record(name: &str, key: &str, version: Option<&str>, sequencer: &str) -> String {
        let version = version.map(|v| format!(r#","versionId":"{v}""#)).unwrap_or_default();
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"{name}","eventTime":"2026-01-01T00:00:00.000Z",
               "s3":{{"s3SchemaVersion":"1.0","bucket":{{"name":"src","arn":"arn:aws:s3:::src"}},
                      "object":{{"key":"{key}","size":5,"eTag":"abc"{version},"sequencer":"{sequencer}"}}}}}}"#
        )
    }

    #[test]
    fn minio_and_ceph_messages_parse_with_decoded_keys_and_padded_sequencers() {
        // MinIO: top-level EventName and Key, `s3:` prefixes.
        let minio = format!(
            r#"{{"EventName":"s3:ObjectCreated:Put","Key":"src/a b","Records":[{}]}}"#,
            record("s3:ObjectCreated:Put", "photos/a+b%2Bc%C3%A9.jpg", Some("v1"), "17A2")
        );
        let e = parse_delivery(minio.as_bytes()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "photos/a b+cé.jpg");
        assert_eq!(e[0].kind, Kind::Created);
        assert_eq!(e[0].sequencer, format!("{}17A2", "0".repeat(28)));
        assert_eq!((e[0].size, e[0].etag.as_deref()), (Some(5), Some("abc")));
        // Ceph: no prefix; several records; each kind.
        let ceph = format!(
            r#"{{"Records":[{},{},{},{},{}]}}"#,
            record("ObjectRemoved:DeleteMarkerCreated", "k", Some("m1"), "0A"),
            record("ObjectTagging:Put", "k", Some("v1"), "0B"),
            record("ObjectAcl:Put", "k", Some("v1"), "0C"),
            record("ObjectRemoved:Delete", "k", Some("v0"), "0D"),
            record("ObjectRestore:Completed", "k", None, "0E"),
        );
        let kinds: Vec<Kind> =
            parse_delivery(ceph.as_bytes()).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(&kinds[..3], &[Kind::DeleteMarker, Kind::Tagging, Kind::Acl]);
        // MinIO's names for metadata changes are no new versions.
        let minio = format!(
            r#"{{"Records":[{},{},{},{}]}}"#,
            record("s3:ObjectCreated:PutTagging", "k", Some("v1"), "01"),
            record("s3:ObjectCreated:DeleteTagging", "k", Some("v1"), "02"),
            record("s3:ObjectCreated:PutRetention", "k", Some("v1"), "03"),
            record("s3:ObjectCreated:PutLegalHold", "k", Some("v1"), "04"),
        );
        let minio_kinds: Vec<Kind> =
            parse_delivery(minio.as_bytes()).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(
            minio_kinds,
            vec![Kind::Tagging, Kind::Tagging, Kind::Retention, Kind::LegalHold]
        );
        assert!(matches!(kinds[3], Kind::Skipped(_)) && matches!(kinds[4], Kind::Skipped(_)));
        // Sequencers compare as hex numbers once padded: 9 < A1.
        assert!(
            parse_delivery(
                format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "k", Some("v"), "9"))
                    .as_bytes()
            )
            .unwrap()[0]
                .sequencer
                < parse_delivery(
                    format!(
                        r#"{{"Records":[{}]}}"#,
                        record("ObjectCreated:Put", "k", Some("v"), "A1")
                    )
                    .as_bytes()
                )
                .unwrap()[0]
                    .sequencer
        );
    }

    #[test]
    fn bad_deliveries_are_refused_with_the_reason() {
        for (body, why) in [
            ("{}".to_owned(), "Records"),
            ("not json".to_owned(), "not an S3 event"),
            (
                format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "k", None, "01")),
                "no versionId",
            ),
            (
                format!(
                    r#"{{"Records":[{}]}}"#,
                    record("ObjectCreated:Put", "a%zz", Some("v"), "01")
                ),
                "%-escape",
            ),
            (
                format!(
                    r#"{{"Records":[{}]}}"#,
                    record("ObjectCreated:Put", "%FF", Some("v"), "01")
                ),
                "UTF-8",
            ),
            (
                format!(
                    r#"{{"Records":[{}]}}"#,
                    record("ObjectCreated:Put", "k", Some("v"), "xyz")
                ),
                "hexadecimal",
            ),
            (
                format!(r#"{{"Records":[{}]}}"#, record("ObjectCreated:Put", "", Some("v"), "01")),
                "no object key",
            ),
        ] {
            let e = parse_delivery(body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{e} (wanted {why})");
        }
    }
}
