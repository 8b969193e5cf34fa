//! End-to-end and conformance tests for s3repl; the tests live in `tests/tests/`. This library
//! holds what both the tests and the benchmarks use.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

/// A deliberately simple rule matcher written straight from the semantics in
/// `shared/reference/s3-replication-semantics.md` §4: it scans every rule for every event. The
/// property tests hold the compiled matcher to it, and the benchmarks measure against it.
pub mod reference {
    use std::collections::BTreeMap;

    use s3repl::config::{
        Filter, ReplicationConfiguration, Rule, SchemaVersion, Selector, Status, StorageClass, Tag,
        Variant,
    };
    use s3repl::rules::{Action, EventKind, Origin, SseKind, VersionEvent};

    /// What the reference decides per destination ARN: (rule ID, action, replica storage class).
    pub type Decision = BTreeMap<String, (String, Action, Option<StorageClass>)>;

    /// The semantics of §4, read literally, one rule at a time.
    pub fn reference(config: &ReplicationConfiguration, ev: &VersionEvent<'_>) -> Decision {
        let mut out = Decision::new();
        if ev.kind == EventKind::DeleteVersion
            || ev.origin == Origin::Lifecycle
            || (ev.kind != EventKind::DeleteMarker
                && matches!(ev.storage_class, StorageClass::Glacier | StorageClass::DeepArchive))
            || (ev.is_replica && ev.kind != EventKind::MetadataUpdate)
            || (config.variant == Variant::S3Control
                && matches!(ev.sse, SseKind::SseKms | SseKind::DsseKms | SseKind::SseC))
        {
            return out;
        }
        let mut best: BTreeMap<String, &Rule> = BTreeMap::new();
        for rule in &config.rules {
            if rule.status != Status::Enabled {
                continue;
            }
            let (prefix, tags): (&str, &[Tag]) = match &rule.selector {
                Selector::Prefix(p) | Selector::Filter(Filter::Prefix(p)) => (p, &[]),
                Selector::Filter(Filter::Empty) => ("", &[]),
                Selector::Filter(Filter::Tag(t)) => ("", std::slice::from_ref(t)),
                Selector::Filter(Filter::And(a)) => (a.prefix.as_deref().unwrap_or(""), &a.tags),
            };
            if !ev.key.starts_with(prefix) {
                continue;
            }
            if ev.kind == EventKind::DeleteMarker && !tags.is_empty() {
                continue;
            }
            if !tags.iter().all(|t| ev.tags.contains(&(t.key.as_str(), t.value.as_str()))) {
                continue;
            }
            let ssc = rule.source_selection_criteria.clone().unwrap_or_default();
            if matches!(ev.sse, SseKind::SseKms | SseKind::DsseKms)
                && ssc.sse_kms_encrypted_objects != Some(Status::Enabled)
            {
                continue;
            }
            if ev.existing && rule.existing_object_replication != Some(Status::Enabled) {
                continue;
            }
            if ev.is_replica && ssc.replica_modifications != Some(Status::Enabled) {
                continue;
            }
            let slot = best.entry(rule.destination.bucket.clone()).or_insert(rule);
            if rule.priority.unwrap_or(0) > slot.priority.unwrap_or(0) {
                *slot = rule;
            }
        }
        for (dest, rule) in best {
            let decision = match ev.kind {
                EventKind::Put => Some((
                    Action::CopyObject,
                    Some(rule.destination.storage_class.unwrap_or(ev.storage_class)),
                )),
                EventKind::DeleteMarker => {
                    let enabled = rule.schema_version() == SchemaVersion::V1
                        || rule
                            .delete_marker_replication
                            .as_ref()
                            .is_some_and(s3repl::config::DeleteMarkerReplication::is_enabled);
                    enabled.then_some((Action::ReplicateDeleteMarker, None))
                }
                EventKind::MetadataUpdate => Some((Action::SyncMetadata, None)),
                EventKind::DeleteVersion => None,
            };
            if let Some((action, sc)) = decision {
                out.insert(dest, (rule.id.clone(), action, sc));
            }
        }
        out
    }
}
