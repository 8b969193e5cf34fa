//! The compiled matcher against a deliberately simple reference (a linear scan written straight
//! from the semantics), on generated configurations and events; and a table of hand-written
//! cases, one per semantic rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::struct_excessive_bools, clippy::too_many_lines)]

use proptest::prelude::*;
use s3repl::config::{
    AccessControlTranslation, AndOperator, DeleteMarkerReplication, Destination,
    EncryptionConfiguration, Exclusion, Filter, OrOperator, OwnerOverride,
    ReplicationConfiguration, Rule, Selector, SourceSelectionCriteria, Status, StorageClass, Tag,
    Variant,
};
use s3repl::rules::{
    Action, CompiledRules, EventKind, MetadataChanges, Origin, SseKind, VersionEvent,
};
use s3repl_tests::reference::{Decision, reference};

const KMS: &str = "arn:aws:kms:us-east-1:123456789012:key/k";

fn compiled_decision(rules: &CompiledRules, ev: &VersionEvent<'_>) -> Decision {
    rules
        .match_event(ev)
        .replications()
        .iter()
        .map(|r| {
            (
                rules.destination(r.destination).unwrap().to_owned(),
                (rules.rule(r.rule).unwrap().id.clone(), r.action, r.storage_class),
            )
        })
        .collect()
}

const ROLE: &str = "arn:aws:iam::123456789012:role/r";

/// Generated rule ingredients; turned into a valid configuration by `build`.
#[derive(Debug, Clone)]
struct GenRule {
    prefix: Option<String>,
    tags: Vec<(u8, u8)>,
    enabled: bool,
    dest: u8,
    dmr: bool,
    sse_kms: bool,
    replica_mods: bool,
    existing: bool,
    storage_class: Option<StorageClass>,
    /// `AccessControlTranslation` (with the Account it requires).
    owner_override: bool,
    /// `Not`: excluded prefixes and tags (one prefix alone is `Not/Prefix`, one tag alone
    /// `Not/Tag`, anything else `Not/Or`).
    not: Option<GenNot>,
}

/// Excluded prefixes and `(key, value)` tag numbers.
type GenNot = (Vec<String>, Vec<(u8, u8)>);

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        proptest::option::of("[ab/]{0,4}"),
        proptest::collection::vec((0u8..3, 0u8..2), 0..3),
        proptest::bool::weighted(0.85),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(proptest::sample::select(vec![
            StorageClass::Standard,
            StorageClass::StandardIa,
            StorageClass::Glacier,
        ])),
        proptest::bool::weighted(0.3),
        proptest::option::weighted(
            0.3,
            (
                proptest::collection::vec("[ab/]{0,4}", 0..3),
                proptest::collection::vec((0u8..3, 0u8..2), 0..3),
            )
                .prop_filter("a Not excludes something", |(p, t)| !p.is_empty() || !t.is_empty()),
        ),
    )
        .prop_map(
            |(
                prefix,
                tags,
                enabled,
                dest,
                dmr,
                sse_kms,
                replica_mods,
                existing,
                storage_class,
                owner_override,
                not,
            )| {
                GenRule {
                    prefix,
                    tags,
                    enabled,
                    dest,
                    dmr,
                    sse_kms,
                    replica_mods,
                    existing,
                    storage_class,
                    owner_override,
                    not,
                }
            },
        )
}

fn dest_arn(d: u8) -> String {
    format!("arn:aws:s3:::dst-{d}")
}

/// A valid V2 configuration: priorities are a permutation, tags unique per rule, delete-marker
/// replication only without tags, a replica key whenever SSE-KMS is selected.
fn build_v2(rules: &[GenRule], priorities: &[i32]) -> ReplicationConfiguration {
    let rules = rules
        .iter()
        .zip(priorities)
        .enumerate()
        .map(|(i, (g, &priority))| {
            let mut tags: Vec<Tag> = Vec::new();
            for (k, v) in &g.tags {
                if !tags.iter().any(|t| t.key == format!("k{k}")) {
                    tags.push(Tag { key: format!("k{k}"), value: format!("v{v}") });
                }
            }
            let tag = |&(k, v): &(u8, u8)| Tag { key: format!("k{k}"), value: format!("v{v}") };
            let not =
                g.not.as_ref().map(|(prefixes, excluded)| match (&prefixes[..], &excluded[..]) {
                    ([p], []) => Exclusion::Prefix(p.clone()),
                    ([], [t]) => Exclusion::Tag(tag(t)),
                    _ => Exclusion::Or(OrOperator {
                        prefixes: prefixes.clone(),
                        tags: excluded.iter().map(tag).collect(),
                    }),
                });
            let excluded_tags = not.as_ref().is_some_and(|n| !n.tags().is_empty());
            let filter = match (&g.prefix, tags.len(), not) {
                (None, 0, None) => Filter::Empty,
                (None, 0, Some(n)) => Filter::Not(n),
                (Some(p), 0, None) => Filter::Prefix(p.clone()),
                (None, 1, None) => Filter::Tag(tags[0].clone()),
                (prefix, _, not) => {
                    Filter::And(AndOperator { prefix: prefix.clone(), tags: tags.clone(), not })
                }
            };
            Rule {
                id: format!("rule-{i}"),
                priority: Some(priority),
                selector: Selector::Filter(filter),
                status: if g.enabled { Status::Enabled } else { Status::Disabled },
                source_selection_criteria: Some(SourceSelectionCriteria {
                    sse_kms_encrypted_objects: g.sse_kms.then_some(Status::Enabled),
                    replica_modifications: g.replica_mods.then_some(Status::Enabled),
                }),
                existing_object_replication: g.existing.then_some(Status::Enabled),
                delete_marker_replication: Some(DeleteMarkerReplication {
                    status: Some(if g.dmr && tags.is_empty() && !excluded_tags {
                        Status::Enabled
                    } else {
                        Status::Disabled
                    }),
                }),
                destination: Destination {
                    bucket: dest_arn(g.dest),
                    storage_class: g.storage_class,
                    account: g.owner_override.then(|| "111122223333".to_owned()),
                    access_control_translation: g
                        .owner_override
                        .then_some(AccessControlTranslation { owner: OwnerOverride::Destination }),
                    encryption_configuration: g.sse_kms.then(|| EncryptionConfiguration {
                        replica_kms_key_id: Some(KMS.into()),
                        ..EncryptionConfiguration::default()
                    }),
                    ..Destination::default()
                },
                bucket: None,
            }
        })
        .collect();
    ReplicationConfiguration { variant: Variant::S3, role: ROLE.into(), rules }
}

fn v2_config() -> impl Strategy<Value = ReplicationConfiguration> {
    prop_oneof![1usize..8, 8usize..100, 100usize..=1000]
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(gen_rule(), n),
                Just((0..i32::try_from(n).unwrap()).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
        .prop_map(|(rules, prios)| build_v2(&rules, &prios))
}

/// A valid V1 configuration: disjoint prefixes (`x0/`, `x1/`, …), one destination.
fn v1_config() -> impl Strategy<Value = ReplicationConfiguration> {
    proptest::collection::vec((proptest::bool::weighted(0.8), any::<bool>()), 1..6).prop_map(|rs| {
        let rules = rs
            .iter()
            .enumerate()
            .map(|(i, &(enabled, sse))| Rule {
                id: format!("v1-{i}"),
                priority: None,
                selector: Selector::Prefix(format!("a{i}/")),
                status: if enabled { Status::Enabled } else { Status::Disabled },
                source_selection_criteria: sse.then_some(SourceSelectionCriteria {
                    sse_kms_encrypted_objects: Some(Status::Enabled),
                    replica_modifications: None,
                }),
                existing_object_replication: None,
                delete_marker_replication: None,
                destination: Destination {
                    bucket: dest_arn(0),
                    encryption_configuration: sse.then(|| EncryptionConfiguration {
                        replica_kms_key_id: Some(KMS.into()),
                        ..EncryptionConfiguration::default()
                    }),
                    ..Destination::default()
                },
                bucket: None,
            })
            .collect();
        ReplicationConfiguration { variant: Variant::S3, role: ROLE.into(), rules }
    })
}

/// Owned event ingredients.
#[derive(Debug, Clone)]
struct GenEvent {
    key: String,
    tags: Vec<(String, String)>,
    kind: EventKind,
    sse: SseKind,
    is_replica: bool,
    existing: bool,
    storage_class: StorageClass,
    origin: Origin,
    changes: MetadataChanges,
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        "[ab/0-4]{0,6}",
        proptest::collection::btree_map(0u8..3, 0u8..2, 0..3),
        proptest::sample::select(vec![
            EventKind::Put,
            EventKind::Put,
            EventKind::DeleteMarker,
            EventKind::DeleteVersion,
            EventKind::MetadataUpdate,
        ]),
        proptest::sample::select(vec![
            SseKind::None,
            SseKind::SseS3,
            SseKind::SseKms,
            SseKind::DsseKms,
            SseKind::SseC,
        ]),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.15),
        proptest::sample::select(vec![
            StorageClass::Standard,
            StorageClass::StandardIa,
            StorageClass::Glacier,
            StorageClass::DeepArchive,
            StorageClass::GlacierIr,
        ]),
        proptest::bool::weighted(0.1),
        0u8..16,
    )
        .prop_map(
            |(key, tags, kind, sse, is_replica, existing, storage_class, lifecycle, changes)| {
                GenEvent {
                    changes: MetadataChanges::from_bits(changes).unwrap(),
                    key,
                    tags: tags
                        .into_iter()
                        .map(|(k, v)| (format!("k{k}"), format!("v{v}")))
                        .collect(),
                    kind,
                    sse,
                    is_replica,
                    existing,
                    storage_class,
                    origin: if lifecycle { Origin::Lifecycle } else { Origin::User },
                }
            },
        )
}

fn check(config: &ReplicationConfiguration, events: &[GenEvent]) -> Result<(), TestCaseError> {
    let rules = CompiledRules::compile(config).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    // One plan reused across the events, as the engine does (exclusion stamps carry over).
    let mut reused = s3repl::rules::Plan::default();
    for g in events {
        let tags: Vec<(&str, &str)> =
            g.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ev = VersionEvent {
            bucket: "src",
            key: &g.key,
            version_id: "v",
            kind: g.kind,
            tags: &tags,
            sse: g.sse,
            is_replica: g.is_replica,
            existing: g.existing,
            storage_class: g.storage_class,
            origin: g.origin,
            changes: g.changes,
        };
        let want = reference(config, &ev);
        prop_assert_eq!(&compiled_decision(&rules, &ev), &want, "event {:?}", g);
        // The explanation's plan is the matcher's plan.
        let explained = rules.explain(&ev);
        let matched = rules.match_event(&ev);
        prop_assert_eq!(explained.plan.replications(), matched.replications());
        rules.match_into(&ev, &mut reused);
        prop_assert_eq!(reused.replications(), matched.replications());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn compiled_matches_reference_v2(config in v2_config(), events in proptest::collection::vec(gen_event(), 40)) {
        check(&config, &events)?;
    }

    #[test]
    fn compiled_matches_reference_v1(config in v1_config(), events in proptest::collection::vec(gen_event(), 40)) {
        check(&config, &events)?;
    }
}

// ---- hand-written cases, one per semantic rule ----------------------------------------------

fn cfg(json_rules: &str) -> CompiledRules {
    let body = format!(r#"{{"Role":"{ROLE}","Rules":[{json_rules}]}}"#);
    let config = ReplicationConfiguration::parse(body.as_bytes(), None).unwrap();
    CompiledRules::compile(&config).unwrap()
}

fn v2(id: &str, prio: i32, filter: &str, dest: &str, extra: &str) -> String {
    format!(
        r#"{{"ID":"{id}","Priority":{prio},"Status":"Enabled","Filter":{filter},"DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"arn:aws:s3:::dst-{dest}"{extra}}}}}"#
    )
}

fn winners(rules: &CompiledRules, ev: &VersionEvent<'_>) -> Vec<(String, String, Action)> {
    rules
        .match_event(ev)
        .replications()
        .iter()
        .map(|r| {
            (
                rules
                    .destination(r.destination)
                    .unwrap()
                    .trim_start_matches("arn:aws:s3:::dst-")
                    .to_owned(),
                rules.rule(r.rule).unwrap().id.clone(),
                r.action,
            )
        })
        .collect()
}

fn put(key: &str) -> VersionEvent<'_> {
    VersionEvent { key, ..VersionEvent::default() }
}

fn w(dest: &str, rule: &str, a: Action) -> (String, String, Action) {
    (dest.into(), rule.into(), a)
}

#[test]
fn only_enabled_rules_and_disabled_never_shadow() {
    let r = cfg(&[
        v2("hi", 9, r#"{"Prefix":"a"}"#, "d", "")
            .replace("\"Enabled\",\"Filter", "\"Disabled\",\"Filter"),
        v2("lo", 1, r#"{"Prefix":"a"}"#, "d", ""),
    ]
    .join(","));
    assert_eq!(winners(&r, &put("abc")), vec![w("d", "lo", Action::CopyObject)]);
}

#[test]
fn prefix_is_bytewise_and_case_sensitive() {
    let r = cfg(&v2("p", 1, r#"{"Prefix":"Photos/é"}"#, "d", ""));
    assert_eq!(winners(&r, &put("Photos/é1")).len(), 1);
    assert!(winners(&r, &put("photos/é1")).is_empty());
    assert!(winners(&r, &put("Photos/e\u{301}1")).is_empty(), "no Unicode normalisation");
    assert_eq!(winners(&r, &put("Photos/é")).len(), 1, "a prefix equal to the key matches");
    assert!(winners(&r, &put("Photos/")).is_empty(), "a prefix longer than the key never matches");
}

#[test]
fn and_needs_every_tag_and_ignores_extra_tags() {
    let r = cfg(&v2(
        "t",
        1,
        r#"{"And":{"Prefix":"x","Tags":[{"Key":"a","Value":"1"},{"Key":"b","Value":""}]}}"#,
        "d",
        "",
    ));
    let ev = |tags: &'static [(&'static str, &'static str)]| VersionEvent {
        key: "x1",
        tags,
        ..VersionEvent::default()
    };
    assert_eq!(winners(&r, &ev(&[("a", "1"), ("b", ""), ("c", "z")])).len(), 1);
    assert!(
        winners(&r, &ev(&[("a", "1")])).is_empty(),
        "one tag is not all (MinIO/RustFS treat And as OR)"
    );
    assert!(
        winners(&r, &ev(&[("a", "1"), ("b", "x")])).is_empty(),
        "empty value matches only empty"
    );
    assert!(winners(&r, &ev(&[("a", "2"), ("b", "")])).is_empty());
}

#[test]
fn highest_priority_wins_per_destination_each_destination_separately() {
    let r = cfg(&[
        v2("d1-low", 1, r#"{"Prefix":""}"#, "d1", ""),
        v2("d1-high", 5, r#"{"Prefix":"logs/"}"#, "d1", r#","StorageClass":"STANDARD_IA""#),
        v2("d2-only", 3, r"{}", "d2", ""),
        v2("d3-tag", 7, r#"{"Tag":{"Key":"k","Value":"v"}}"#, "d3", ""),
    ]
    .join(","));
    assert_eq!(
        winners(&r, &put("logs/x")),
        vec![w("d1", "d1-high", Action::CopyObject), w("d2", "d2-only", Action::CopyObject)]
    );
    assert_eq!(
        winners(&r, &put("other")),
        vec![w("d1", "d1-low", Action::CopyObject), w("d2", "d2-only", Action::CopyObject)]
    );
    let plan = r.match_event(&put("logs/x"));
    assert_eq!(
        plan.replications()[0].storage_class,
        Some(StorageClass::StandardIa),
        "rule override"
    );
    let ev = VersionEvent {
        key: "other",
        storage_class: StorageClass::OnezoneIa,
        ..VersionEvent::default()
    };
    assert_eq!(
        r.match_event(&ev).replications()[0].storage_class,
        Some(StorageClass::OnezoneIa),
        "else the source class"
    );
}

#[test]
fn v1_replicates_user_delete_markers_not_lifecycle_ones() {
    let body = format!(
        r"<ReplicationConfiguration><Role>{ROLE}</Role><Rule><ID>v1</ID><Prefix>a/</Prefix><Status>Enabled</Status><Destination><Bucket>arn:aws:s3:::dst-d</Bucket></Destination></Rule></ReplicationConfiguration>"
    );
    let r =
        CompiledRules::compile(&ReplicationConfiguration::parse(body.as_bytes(), None).unwrap())
            .unwrap();
    let dm = VersionEvent { key: "a/x", kind: EventKind::DeleteMarker, ..VersionEvent::default() };
    assert_eq!(winners(&r, &dm), vec![w("d", "v1", Action::ReplicateDeleteMarker)]);
    let lifecycle = VersionEvent { origin: Origin::Lifecycle, ..dm };
    assert!(winners(&r, &lifecycle).is_empty());
    assert!(
        winners(&r, &put("b/x")).is_empty(),
        "the V1 prefix narrows the rule (peers ignore it)"
    );
}

#[test]
fn v2_delete_markers_follow_the_winning_rule() {
    let on = v2("on", 1, r#"{"Prefix":""}"#, "d", "")
        .replace(r#"{"Status":"Disabled"}"#, r#"{"Status":"Enabled"}"#);
    let off = v2("off", 2, r#"{"Prefix":"a"}"#, "d", "");
    let r = cfg(&[on, off].join(","));
    let dm = |key| VersionEvent { key, kind: EventKind::DeleteMarker, ..VersionEvent::default() };
    assert_eq!(winners(&r, &dm("b")), vec![w("d", "on", Action::ReplicateDeleteMarker)]);
    assert!(winners(&r, &dm("a")).is_empty(), "the higher-priority rule without it decides");
    let ex = r.explain(&dm("a"));
    assert!(
        ex.rules
            .iter()
            .any(|(id, v)| id == "off" && *v == s3repl::rules::Verdict::DeleteMarkersDisabled)
    );
}

#[test]
fn tag_rules_never_replicate_delete_markers() {
    let tag = v2("tag", 9, r#"{"Tag":{"Key":"k","Value":"v"}}"#, "d", "");
    let all =
        v2("all", 1, r"{}", "d", "").replace(r#"{"Status":"Disabled"}"#, r#"{"Status":"Enabled"}"#);
    let r = cfg(&[tag, all].join(","));
    let dm = VersionEvent {
        key: "x",
        kind: EventKind::DeleteMarker,
        tags: &[("k", "v")],
        ..VersionEvent::default()
    };
    assert_eq!(
        winners(&r, &dm),
        vec![w("d", "all", Action::ReplicateDeleteMarker)],
        "delete markers carry no tags"
    );
}

#[test]
fn version_deletes_never() {
    let r =
        cfg(&v2("a", 1, r"{}", "d", "")
            .replace(r#"{"Status":"Disabled"}"#, r#"{"Status":"Enabled"}"#));
    let ev = VersionEvent { key: "x", kind: EventKind::DeleteVersion, ..VersionEvent::default() };
    assert!(winners(&r, &ev).is_empty());
    assert_eq!(r.explain(&ev).ineligible, Some(s3repl::rules::Ineligible::VersionDelete));
}

#[test]
fn replicas_only_for_metadata_under_replica_modifications() {
    let plain = v2("plain", 2, r"{}", "d", "");
    let sync = v2("sync", 1, r"{}", "d", "")
        .replace(r#""Status":"Enabled","#, r#""Status":"Enabled","SourceSelectionCriteria":{"ReplicaModifications":{"Status":"Enabled"}},"#);
    let r = cfg(&[plain, sync].join(","));
    let replica_put = VersionEvent { key: "x", is_replica: true, ..VersionEvent::default() };
    assert!(winners(&r, &replica_put).is_empty(), "no chaining A→B→C");
    let replica_meta = VersionEvent { kind: EventKind::MetadataUpdate, ..replica_put };
    assert_eq!(winners(&r, &replica_meta), vec![w("d", "sync", Action::SyncMetadata)]);
    let meta =
        VersionEvent { key: "x", kind: EventKind::MetadataUpdate, ..VersionEvent::default() };
    assert_eq!(winners(&r, &meta), vec![w("d", "plain", Action::SyncMetadata)]);
    assert_eq!(r.match_event(&meta).replications()[0].storage_class, None);
}

#[test]
fn kms_objects_only_under_sse_kms_selection() {
    let plain = v2("plain", 2, r"{}", "d", "");
    let kms = v2("kms", 1, r"{}", "d", &format!(r#","EncryptionConfiguration":{{"ReplicaKmsKeyID":"{KMS}"}}"#))
        .replace(r#""Status":"Enabled","#, r#""Status":"Enabled","SourceSelectionCriteria":{"SseKmsEncryptedObjects":{"Status":"Enabled"}},"#);
    let r = cfg(&[plain.clone(), kms].join(","));
    for sse in [SseKind::SseKms, SseKind::DsseKms] {
        let ev = VersionEvent { key: "x", sse, ..VersionEvent::default() };
        assert_eq!(winners(&r, &ev), vec![w("d", "kms", Action::CopyObject)], "{sse}");
        let rule = r.rule(r.match_event(&ev).replications()[0].rule).unwrap();
        assert_eq!(rule.replica_kms_key_id.as_deref(), Some(KMS));
    }
    for sse in [SseKind::None, SseKind::SseS3, SseKind::SseC] {
        let ev = VersionEvent { key: "x", sse, ..VersionEvent::default() };
        assert_eq!(winners(&r, &ev), vec![w("d", "plain", Action::CopyObject)], "{sse}");
    }
    let only_plain = cfg(&plain);
    assert!(
        winners(
            &only_plain,
            &VersionEvent { key: "x", sse: SseKind::SseKms, ..VersionEvent::default() }
        )
        .is_empty()
    );
}

#[test]
fn existing_objects_only_under_existing_object_replication() {
    let plain = v2("plain", 2, r"{}", "d", "");
    let eor = v2("eor", 1, r"{}", "d", "").replace(
        r#""Status":"Enabled","#,
        r#""Status":"Enabled","ExistingObjectReplication":{"Status":"Enabled"},"#,
    );
    let r = cfg(&[plain, eor].join(","));
    let ev = VersionEvent { key: "x", existing: true, ..VersionEvent::default() };
    assert_eq!(winners(&r, &ev), vec![w("d", "eor", Action::CopyObject)]);
}

#[test]
fn archive_sources_never() {
    let r = cfg(&v2("a", 1, r"{}", "d", r#","StorageClass":"GLACIER""#));
    for sc in [StorageClass::Glacier, StorageClass::DeepArchive] {
        assert!(
            winners(&r, &VersionEvent { key: "x", storage_class: sc, ..VersionEvent::default() })
                .is_empty()
        );
    }
    let ir = VersionEvent {
        key: "x",
        storage_class: StorageClass::GlacierIr,
        ..VersionEvent::default()
    };
    assert_eq!(
        r.match_event(&ir).replications()[0].storage_class,
        Some(StorageClass::Glacier),
        "replicas may be written into archive classes"
    );
}

#[test]
fn outposts_replicates_only_sse_s3_or_plain() {
    let body = include_str!("../../examples/outposts-replication.json");
    let r =
        CompiledRules::compile(&ReplicationConfiguration::parse(body.as_bytes(), None).unwrap())
            .unwrap();
    assert_eq!(
        r.match_event(&VersionEvent {
            key: "data/x",
            sse: SseKind::SseS3,
            ..VersionEvent::default()
        })
        .replications()
        .len(),
        1
    );
    for sse in [SseKind::SseKms, SseKind::SseC] {
        assert!(
            r.match_event(&VersionEvent { key: "data/x", sse, ..VersionEvent::default() })
                .is_empty()
        );
    }
}

#[test]
fn explanation_names_every_rule() {
    let r = cfg(&[
        v2("prefix", 3, r#"{"Prefix":"zzz"}"#, "d", ""),
        v2("tag", 2, r#"{"Tag":{"Key":"k","Value":"v"}}"#, "d", ""),
        v2("all", 1, r"{}", "d", ""),
        v2("hi", 4, r"{}", "e", ""),
    ]
    .join(","));
    let ex = r.explain(&put("abc"));
    let verdicts: Vec<String> = ex.rules.iter().map(|(id, v)| format!("{id}: {v}")).collect();
    assert_eq!(
        verdicts,
        vec![
            "prefix: skipped: the key does not start with the rule's prefix",
            "tag: skipped: tag \"k\" is missing or has another value",
            "all: selected",
            "hi: selected",
        ]
    );
}

/// Issue 29, item 1: `Not` excludes what its prefix, its tag, or any of its `Or`'s prefixes and
/// tags match; an excluded rule lets a lower-priority rule for the same destination win.
#[test]
fn exclusions_skip_a_rule_and_let_the_next_one_win() {
    let r = cfg(&[
        v2(
            "logs-but-tmp",
            5,
            r#"{"And":{"Prefix":"logs/","Not":{"Or":{"Prefixes":["logs/tmp/","logs/cache"],"Tags":[{"Key":"env","Value":"dev"},{"Key":"env","Value":"test"}]}}}}"#,
            "d",
            "",
        ),
        v2("not-secret", 3, r#"{"Not":{"Tag":{"Key":"class","Value":"secret"}}}"#, "d", ""),
        v2("not-scratch", 1, r#"{"Not":{"Prefix":"scratch/"}}"#, "e", ""),
    ]
    .join(","));
    let ev = |key: &'static str, tags: &'static [(&'static str, &'static str)]| VersionEvent {
        key,
        tags,
        ..VersionEvent::default()
    };
    let copy = Action::CopyObject;
    assert_eq!(
        winners(&r, &ev("logs/app.log", &[("env", "prod")])),
        vec![w("d", "logs-but-tmp", copy), w("e", "not-scratch", copy)]
    );
    for excluded in
        [ev("logs/tmp/x", &[]), ev("logs/cache9", &[]), ev("logs/a", &[("env", "test")])]
    {
        assert_eq!(
            winners(&r, &excluded),
            vec![w("d", "not-secret", copy), w("e", "not-scratch", copy)],
            "{excluded:?}"
        );
    }
    assert_eq!(winners(&r, &ev("scratch/1", &[("class", "secret")])), vec![]);
    assert_eq!(winners(&r, &ev("logs/tmp", &[])).len(), 2, "a key shorter than the exclusion");
    let ex = r.explain(&ev("logs/cache/1", &[("class", "secret")]));
    let verdicts: Vec<String> = ex.rules.iter().map(|(id, v)| format!("{id}: {v}")).collect();
    assert_eq!(
        verdicts,
        vec![
            "logs-but-tmp: skipped: the rule's Not excludes prefix \"logs/cache\"",
            "not-secret: skipped: the rule's Not excludes tag \"class\"=\"secret\"",
            "not-scratch: selected",
        ]
    );
}
