//! `CompiledRules`: a validated configuration compiled for matching, and the matcher itself.

use std::fmt;

use super::event::{EventKind, Origin, SseKind, VersionEvent};
use super::trie::PrefixTrie;
use crate::config::{
    BucketContext, DeleteMarkerReplication, ReplicationConfiguration, SchemaVersion, Status,
    StorageClass, ValidationError, Variant,
};

/// Index of a destination bucket in a [`CompiledRules`] (order of first appearance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationId(pub u32);

/// Index of a rule in a [`CompiledRules`] (document order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleIndex(pub u32);

/// What to do at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Copy the object version (data and metadata).
    CopyObject,
    /// Create the delete marker at the destination.
    ReplicateDeleteMarker,
    /// Apply the metadata change (tags, ACL, Object Lock) to the replica version.
    SyncMetadata,
}

impl Action {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CopyObject => "copy_object",
            Action::ReplicateDeleteMarker => "replicate_delete_marker",
            Action::SyncMetadata => "sync_metadata",
        }
    }
}

/// One destination's decision: the winning rule and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Replication {
    /// The destination bucket.
    pub destination: DestinationId,
    /// The single winning rule for that destination.
    pub rule: RuleIndex,
    /// The action.
    pub action: Action,
    /// The replica's storage class (rule override, else the source's); `None` for delete
    /// markers and metadata updates, which create no object data.
    pub storage_class: Option<StorageClass>,
}

/// The matcher's answer: at most one [`Replication`] per destination, in destination order.
///
/// Reuse one `Plan` across calls to [`CompiledRules::match_into`]: after it has grown to the
/// number of destinations, matching allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    entries: Vec<Replication>,
    /// Scratch: per destination, the best (priority, rule) seen during one walk. All `None`
    /// between calls.
    best: Vec<Option<(i64, u32)>>,
    /// Scratch: the destinations whose `best` slot the current walk filled, so that only those
    /// are read and reset (a match costs nothing per destination it does not touch).
    touched: Vec<u32>,
    /// Scratch, for configurations with exclusion prefixes: per rule, the number of the last
    /// match that found the key under one of the rule's `Not` prefixes. Stamping instead of
    /// clearing keeps a match's cost independent of the number of rules.
    excluded: Vec<u32>,
    /// The number of the current match (0: none yet).
    walk: u32,
}

impl Plan {
    /// The decisions, one per destination that gets the version.
    pub fn replications(&self) -> &[Replication] {
        &self.entries
    }

    /// Whether no destination gets the version.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn push(&mut self, r: Replication) {
        self.entries.push(r);
    }

    pub(crate) fn sort_by_destination(&mut self) {
        self.entries.sort_by_key(|r| r.destination);
    }
}

/// One rule, compiled.
// The flags mirror the configuration's Enabled/Disabled switches one for one.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule `ID`.
    pub id: String,
    /// `Priority` (0 for V1 rules, which cannot overlap).
    pub priority: i64,
    /// Whether the rule is `Enabled` (disabled rules are kept only for explanations).
    pub enabled: bool,
    /// The destination bucket.
    pub destination: DestinationId,
    /// The key prefix the rule requires.
    pub prefix: String,
    /// The tags the rule requires, sorted by key.
    pub tags: Vec<(String, String)>,
    /// Key prefixes the rule excludes (`Not/Prefix`, `Not/Or/Prefix`): any of them.
    pub excluded_prefixes: Vec<String>,
    /// Tags the rule excludes (`Not/Tag`, `Not/Or/Tag`): any of them.
    pub excluded_tags: Vec<(String, String)>,
    /// The schema version of the rule.
    pub schema: SchemaVersion,
    /// Whether delete markers are replicated (V1: user delete markers always; V2: as set).
    pub delete_markers: bool,
    /// `SseKmsEncryptedObjects` Enabled.
    pub sse_kms: bool,
    /// `ReplicaModifications` Enabled.
    pub replica_modifications: bool,
    /// `ExistingObjectReplication` Enabled.
    pub existing_objects: bool,
    /// `Destination/StorageClass`.
    pub storage_class: Option<StorageClass>,
    /// `Destination/Account`.
    pub account: Option<String>,
    /// Whether `AccessControlTranslation` makes the destination account own replicas.
    pub owner_override: bool,
    /// `ReplicaKmsKeyID`.
    pub replica_kms_key_id: Option<String>,
    /// `UseSourceMultiRegionKey` Enabled: replicas of SSE-KMS objects are encrypted under the
    /// source key's related multi-Region key in the destination's Region.
    pub use_source_multi_region_key: bool,
    /// `ReplicationTime` Enabled (S3 RTC, 15 minutes).
    pub replication_time: bool,
    /// `Metrics` Enabled.
    pub metrics: bool,
}

impl CompiledRule {
    /// Whether the object's tags include every tag the rule requires (equal values).
    #[inline]
    pub(crate) fn tags_match(&self, tags: &[(&str, &str)]) -> bool {
        self.tags.iter().all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
    }

    /// The first exclusion tag the object carries, if any.
    #[inline]
    pub(crate) fn excluding_tag(&self, tags: &[(&str, &str)]) -> Option<&(String, String)> {
        self.excluded_tags.iter().find(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
    }

    /// The first exclusion prefix the key starts with, if any.
    pub(crate) fn excluding_prefix(&self, key: &str) -> Option<&str> {
        self.excluded_prefixes
            .iter()
            .find(|p| key.as_bytes().starts_with(p.as_bytes()))
            .map(String::as_str)
    }

    /// The source-selection filters: SSE-KMS, existing objects, replica modifications.
    ///
    /// These act as filters (a rule that fails them does not match, and a lower-priority rule
    /// for the same destination may win instead), following S3's description of
    /// `SourceSelectionCriteria` as additional filters.
    #[inline]
    pub(crate) fn selects(&self, ev: &VersionEvent<'_>) -> bool {
        (!ev.sse.is_kms() || self.sse_kms)
            && (!ev.existing || self.existing_objects)
            && (!ev.is_replica || self.replica_modifications)
    }
}

/// A configuration compiled for matching: immutable, `Send + Sync`, shared behind an `Arc`.
#[derive(Clone)]
pub struct CompiledRules {
    variant: Variant,
    schema: SchemaVersion,
    rules: Vec<CompiledRule>,
    /// Shared: every planned task holds its destination's name, and a clone of an `Arc` costs
    /// no allocation per version.
    destinations: Vec<std::sync::Arc<str>>,
    trie: PrefixTrie,
    /// Every enabled rule's exclusion prefixes, mapped to the rule; `None` when no rule has
    /// one, so configurations without exclusions pay nothing for them.
    exclusions: Option<PrefixTrie>,
}

impl fmt::Debug for CompiledRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRules")
            .field("variant", &self.variant)
            .field("schema", &self.schema)
            .field("rules", &self.rules.len())
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

/// Why an event is not replicated anywhere, whatever the rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Version deletes (DELETE with a version id) are never replicated.
    VersionDelete,
    /// Lifecycle actions are never replicated.
    Lifecycle,
    /// Objects in archive classes (GLACIER, `DEEP_ARCHIVE`) are not replicated.
    Archived(StorageClass),
    /// Replicas are not replicated again (only their metadata changes, under
    /// `ReplicaModifications`).
    Replica,
    /// S3 on Outposts replicates only SSE-S3 (or unencrypted) objects.
    OutpostsEncryption(SseKind),
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::VersionDelete => {
                f.write_str("version deletes (DELETE with a version id) are never replicated")
            }
            Ineligible::Lifecycle => f.write_str("lifecycle actions are never replicated"),
            Ineligible::Archived(c) => {
                write!(f, "objects in the archive class {c} are not replicated")
            }
            Ineligible::Replica => f.write_str(
                "the version is a replica: replicas are not replicated again (only their metadata changes, under ReplicaModifications)",
            ),
            Ineligible::OutpostsEncryption(s) => {
                write!(f, "S3 on Outposts does not replicate {s} objects")
            }
        }
    }
}

impl CompiledRules {
    /// Validates (with no bucket context) and compiles a configuration.
    pub fn compile(config: &ReplicationConfiguration) -> Result<Self, ValidationError> {
        config.validate(&BucketContext::default())?;
        let schema = config.schema_version();
        let mut destinations: Vec<std::sync::Arc<str>> = Vec::new();
        let mut rules = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            let d = &rule.destination;
            let dest = if let Some(i) = destinations.iter().position(|x| **x == *d.bucket) {
                i
            } else {
                destinations.push(d.bucket.as_str().into());
                destinations.len() - 1
            };
            let pairs = |tags: &[crate::config::Tag]| -> Vec<(String, String)> {
                let mut pairs: Vec<(String, String)> =
                    tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
                pairs.sort();
                pairs.dedup();
                pairs
            };
            let excluded = rule.selector.exclusion();
            let ssc = rule.source_selection_criteria.as_ref();
            rules.push(CompiledRule {
                id: rule.id.clone(),
                priority: i64::from(rule.priority.unwrap_or(0)),
                enabled: rule.status == Status::Enabled,
                destination: DestinationId(u32::try_from(dest).unwrap_or(u32::MAX)),
                prefix: rule.selector.prefix().to_owned(),
                tags: pairs(rule.selector.tags()),
                excluded_prefixes: excluded.map(|x| x.prefixes().to_vec()).unwrap_or_default(),
                excluded_tags: excluded.map(|x| pairs(x.tags())).unwrap_or_default(),
                schema: rule.schema_version(),
                delete_markers: match rule.schema_version() {
                    SchemaVersion::V1 => true,
                    SchemaVersion::V2 => rule
                        .delete_marker_replication
                        .as_ref()
                        .is_some_and(DeleteMarkerReplication::is_enabled),
                },
                sse_kms: ssc.and_then(|s| s.sse_kms_encrypted_objects) == Some(Status::Enabled),
                replica_modifications: ssc.and_then(|s| s.replica_modifications)
                    == Some(Status::Enabled),
                existing_objects: rule.existing_object_replication == Some(Status::Enabled),
                storage_class: d.storage_class,
                account: d.account.clone(),
                owner_override: d.access_control_translation.is_some(),
                replica_kms_key_id: d
                    .encryption_configuration
                    .as_ref()
                    .and_then(|e| e.replica_kms_key_id.clone()),
                use_source_multi_region_key: d.encryption_configuration.as_ref().is_some_and(
                    crate::config::EncryptionConfiguration::uses_source_multi_region_key,
                ),
                replication_time: d.replication_time.is_some_and(|r| r.status == Status::Enabled),
                metrics: d.metrics.is_some_and(|m| m.status == Status::Enabled),
            });
        }
        // Within a node, rules are kept highest priority first so a walk can skip rules that
        // cannot beat the current best for their destination.
        let mut order: Vec<u32> = (0..rules.len())
            .filter(|&i| rules.get(i).is_some_and(|r| r.enabled))
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rules.get(i as usize).map_or(0, |r| r.priority)));
        let trie = PrefixTrie::build(
            order.iter().filter_map(|&i| rules.get(i as usize).map(|r| (r.prefix.as_bytes(), i))),
        );
        let excluding: Vec<(&[u8], u32)> = order
            .iter()
            .filter_map(|&i| rules.get(i as usize).map(|r| (r, i)))
            .flat_map(|(r, i)| r.excluded_prefixes.iter().map(move |p| (p.as_bytes(), i)))
            .collect();
        let exclusions = (!excluding.is_empty()).then(|| PrefixTrie::build(excluding));
        Ok(CompiledRules { variant: config.variant, schema, rules, destinations, trie, exclusions })
    }

    /// The API variant of the configuration.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The configuration's schema version.
    pub fn schema(&self) -> SchemaVersion {
        self.schema
    }

    /// Every rule, in document order (disabled ones included).
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// One rule.
    pub fn rule(&self, index: RuleIndex) -> Option<&CompiledRule> {
        self.rules.get(index.0 as usize)
    }

    /// Every destination bucket ARN, indexed by [`DestinationId`].
    pub fn destinations(&self) -> &[std::sync::Arc<str>] {
        &self.destinations
    }

    /// One destination bucket ARN.
    pub fn destination(&self, id: DestinationId) -> Option<&str> {
        self.destinations.get(id.0 as usize).map(|d| &**d)
    }

    /// The destination's ARN, shared.
    pub(crate) fn shared_destination(&self, id: DestinationId) -> Option<&std::sync::Arc<str>> {
        self.destinations.get(id.0 as usize)
    }

    /// Why the event cannot be replicated whatever the rules, if it cannot.
    pub fn ineligible(&self, ev: &VersionEvent<'_>) -> Option<Ineligible> {
        if ev.kind == EventKind::DeleteVersion {
            return Some(Ineligible::VersionDelete);
        }
        if ev.origin == Origin::Lifecycle {
            return Some(Ineligible::Lifecycle);
        }
        if ev.kind != EventKind::DeleteMarker && ev.storage_class.is_archive() {
            return Some(Ineligible::Archived(ev.storage_class));
        }
        if ev.is_replica && ev.kind != EventKind::MetadataUpdate {
            return Some(Ineligible::Replica);
        }
        if self.variant == Variant::S3Control && (ev.sse.is_kms() || ev.sse == SseKind::SseC) {
            return Some(Ineligible::OutpostsEncryption(ev.sse));
        }
        None
    }

    /// Matches an event, allocating a fresh [`Plan`]. See [`CompiledRules::match_into`].
    pub fn match_event(&self, ev: &VersionEvent<'_>) -> Plan {
        let mut plan = Plan::default();
        self.match_into(ev, &mut plan);
        plan
    }

    /// Matches an event into `plan` (cleared first): for every destination, the enabled rule
    /// with the highest priority whose filter (exclusions included) and source-selection
    /// criteria match, and the action it implies. Cost: one walk of the key through the trie
    /// plus the rules whose prefix matched, and, when some rule has exclusion prefixes, one
    /// walk through the trie of those; no allocation once `plan` has grown to the number of
    /// destinations (and of rules, with exclusion prefixes).
    pub fn match_into(&self, ev: &VersionEvent<'_>, plan: &mut Plan) {
        plan.entries.clear();
        if self.ineligible(ev).is_some() {
            return;
        }
        if plan.best.len() != self.destinations.len() {
            // First use with this configuration (or a plan reused across configurations).
            plan.best.clear();
            plan.best.resize(self.destinations.len(), None);
            plan.touched.clear();
            plan.touched.reserve(self.destinations.len());
        }
        plan.touched.clear();
        let walk = self.mark_excluded(ev.key.as_bytes(), plan);
        let is_delete_marker = ev.kind == EventKind::DeleteMarker;
        let rules = &self.rules;
        let (best, touched, excluded) = (&mut plan.best, &mut plan.touched, &plan.excluded);
        self.trie.for_each_prefix_of(ev.key.as_bytes(), |candidates| {
            for &i in candidates {
                let Some(rule) = rules.get(i as usize) else { continue };
                let Some(slot) = best.get_mut(rule.destination.0 as usize) else { continue };
                if slot.is_some_and(|(p, _)| p >= rule.priority) {
                    continue;
                }
                if walk != 0 && excluded.get(i as usize) == Some(&walk) {
                    continue;
                }
                // A delete marker carries no tags: it needs none and no tag excludes it.
                let tags_ok = if is_delete_marker {
                    rule.tags.is_empty()
                } else {
                    rule.tags_match(ev.tags) && rule.excluding_tag(ev.tags).is_none()
                };
                if tags_ok && rule.selects(ev) {
                    if slot.is_none() {
                        touched.push(rule.destination.0);
                    }
                    *slot = Some((rule.priority, i));
                }
            }
        });
        // Destination order, as a scan of every slot would give (a handful of entries).
        plan.touched.sort_unstable();
        for &dest in &plan.touched {
            let Some(slot) = plan.best.get_mut(dest as usize) else { continue };
            let Some((_, i)) = slot.take() else { continue };
            let Some(rule) = self.rules.get(i as usize) else { continue };
            if let Some(r) = decide(rule, ev, dest as usize, i) {
                plan.entries.push(r);
            }
        }
    }
}

impl CompiledRules {
    /// Stamps, in `plan`, every rule one of whose exclusion prefixes the key starts with;
    /// returns the stamp (0 when the configuration has no exclusion prefixes).
    fn mark_excluded(&self, key: &[u8], plan: &mut Plan) -> u32 {
        let Some(exclusions) = &self.exclusions else { return 0 };
        if plan.excluded.len() != self.rules.len() {
            plan.excluded.clear();
            plan.excluded.resize(self.rules.len(), 0);
        }
        plan.walk = plan.walk.wrapping_add(1);
        if plan.walk == 0 {
            // Wrapped: old stamps could collide with new ones.
            plan.excluded.fill(0);
            plan.walk = 1;
        }
        let (marks, walk) = (&mut plan.excluded, plan.walk);
        exclusions.for_each_prefix_of(key, |rules| {
            for &i in rules {
                if let Some(m) = marks.get_mut(i as usize) {
                    *m = walk;
                }
            }
        });
        walk
    }
}

/// The action the winning rule implies for the event, if any.
pub(crate) fn decide(
    rule: &CompiledRule,
    ev: &VersionEvent<'_>,
    dest: usize,
    index: u32,
) -> Option<Replication> {
    let (action, storage_class) = match ev.kind {
        EventKind::Put => {
            (Action::CopyObject, Some(rule.storage_class.unwrap_or(ev.storage_class)))
        }
        // The winning rule decides: a lower-priority rule with delete-marker replication
        // enabled does not take over (MinIO and S3 decide on the selected rule).
        EventKind::DeleteMarker if rule.delete_markers => (Action::ReplicateDeleteMarker, None),
        // With the destination account owning the replicas, S3 stops replicating the
        // source's ACL changes; the other changes still go. Nothing left, nothing to do.
        EventKind::MetadataUpdate if ev.changes.replicated(rule.owner_override).is_empty() => {
            return None;
        }
        EventKind::MetadataUpdate => (Action::SyncMetadata, None),
        EventKind::DeleteMarker | EventKind::DeleteVersion => return None,
    };
    Some(Replication {
        destination: DestinationId(u32::try_from(dest).unwrap_or(u32::MAX)),
        rule: RuleIndex(index),
        action,
        storage_class,
    })
}
