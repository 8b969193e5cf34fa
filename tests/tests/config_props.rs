//! Property tests of the configuration codecs: generated models round-trip through XML and
//! JSON unchanged, and no input, however mangled, makes parsing or validation panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::struct_excessive_bools, clippy::too_many_lines)]

use proptest::prelude::*;
use s3repl::config::{
    AccessControlTranslation, AndOperator, BucketContext, DeleteMarkerReplication, Destination,
    EncryptionConfiguration, EventThreshold, Exclusion, Filter, Metrics, OrOperator, OwnerOverride,
    ReplicationConfiguration, ReplicationTime, Rule, Selector, SourceSelectionCriteria, Status,
    StorageClass, Tag, Variant,
};

/// Text that XML can carry: markup characters, whitespace, CR, non-ASCII; no NUL.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /._\\-&<>'\"\t\n\r\u{e9}\u{4e2d}\u{1F600}]{0,12}"
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::Enabled), Just(Status::Disabled)]
}

fn tag() -> impl Strategy<Value = Tag> {
    (text(), text()).prop_map(|(key, value)| Tag { key, value })
}

/// A `Not`: exactly one of a prefix, a tag, or an `Or` of at least one prefix or tag.
fn exclusion() -> impl Strategy<Value = Exclusion> {
    prop_oneof![
        text().prop_map(Exclusion::Prefix),
        tag().prop_map(Exclusion::Tag),
        (proptest::collection::vec(text(), 0..4), proptest::collection::vec(tag(), 0..4))
            .prop_filter("an Or holds something", |(p, t)| !p.is_empty() || !t.is_empty())
            .prop_map(|(prefixes, tags)| Exclusion::Or(OrOperator { prefixes, tags })),
    ]
}

/// Exclusions (`Not`) exist in the S3 API only.
fn filter(variant: Variant) -> impl Strategy<Value = Filter> {
    let s3 = variant == Variant::S3;
    let not = move || proptest::option::of(exclusion()).prop_map(move |n| n.filter(|_| s3));
    prop_oneof![
        Just(Filter::Empty),
        text().prop_map(Filter::Prefix),
        tag().prop_map(Filter::Tag),
        (proptest::option::of(text()), proptest::collection::vec(tag(), 0..4), not())
            .prop_filter("an And holds something", |(p, t, n)| {
                p.is_some() || !t.is_empty() || n.is_some()
            })
            .prop_map(|(prefix, tags, not)| Filter::And(AndOperator { prefix, tags, not })),
        not().prop_map(|n| n.map_or(Filter::Empty, Filter::Not)),
    ]
}

fn minutes() -> impl Strategy<Value = Option<i32>> {
    proptest::option::of(any::<i32>())
}

fn destination(variant: Variant) -> impl Strategy<Value = Destination> {
    let s3 = variant == Variant::S3;
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(proptest::sample::select(StorageClass::ALL)),
        any::<bool>(),
        proptest::option::of((
            proptest::option::of(text()),
            proptest::option::of(status()).prop_map(move |s| s.filter(|_| s3)),
        )),
        proptest::option::of((status(), minutes())),
        proptest::option::of((status(), proptest::option::of(minutes()))),
    )
        .prop_map(|(bucket, account, storage_class, act, enc, rt, metrics)| Destination {
            bucket,
            account,
            storage_class,
            access_control_translation: act
                .then_some(AccessControlTranslation { owner: OwnerOverride::Destination }),
            encryption_configuration: enc.map(
                |(replica_kms_key_id, use_source_multi_region_key)| EncryptionConfiguration {
                    replica_kms_key_id,
                    use_source_multi_region_key,
                },
            ),
            replication_time: rt.map(|(status, minutes)| ReplicationTime { status, minutes }),
            metrics: metrics.map(|(status, t)| Metrics {
                status,
                event_threshold: t.map(|minutes| EventThreshold { minutes }),
            }),
        })
}

fn rule(variant: Variant) -> impl Strategy<Value = Rule> {
    (
        "[a-zA-Z0-9 _<&-]{1,16}",
        proptest::option::of(any::<i32>()),
        prop_oneof![text().prop_map(Selector::Prefix), filter(variant).prop_map(Selector::Filter)],
        status(),
        proptest::option::of((proptest::option::of(status()), proptest::option::of(status()))),
        proptest::option::of(status()),
        proptest::option::of(proptest::option::of(status())),
        destination(variant),
        text(),
    )
        .prop_map(
            move |(id, priority, selector, status, ssc, eor, dmr, destination, bucket)| Rule {
                id,
                priority,
                selector,
                status,
                source_selection_criteria: ssc.map(
                    |(sse_kms_encrypted_objects, replica_modifications)| SourceSelectionCriteria {
                        sse_kms_encrypted_objects,
                        replica_modifications,
                    },
                ),
                existing_object_replication: eor,
                delete_marker_replication: dmr.map(|status| DeleteMarkerReplication { status }),
                destination,
                bucket: (variant == Variant::S3Control).then_some(bucket),
            },
        )
}

fn configuration() -> impl Strategy<Value = ReplicationConfiguration> {
    prop_oneof![Just(Variant::S3), Just(Variant::S3Control)].prop_flat_map(|variant| {
        (text(), proptest::collection::vec(rule(variant), 1..6))
            .prop_map(move |(role, rules)| ReplicationConfiguration { variant, role, rules })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn xml_round_trip(config in configuration()) {
        let xml = config.to_xml();
        let back = ReplicationConfiguration::from_xml(xml.as_bytes(), Some(config.variant));
        prop_assert_eq!(back.as_ref(), Ok(&config), "{}", xml);
        // The namespace alone tells the variant.
        prop_assert_eq!(ReplicationConfiguration::parse(xml.as_bytes(), None).map(|c| c.variant), Ok(config.variant));
    }

    #[test]
    fn json_round_trip(config in configuration()) {
        let json = config.to_json();
        let back = ReplicationConfiguration::from_json(json.as_bytes(), Some(config.variant));
        prop_assert_eq!(back.as_ref(), Ok(&config), "{}", json);
    }

    #[test]
    fn validation_is_deterministic_and_codec_independent(config in configuration()) {
        let ctx = BucketContext::default();
        let via_json = ReplicationConfiguration::from_json(config.to_json().as_bytes(), Some(config.variant)).unwrap();
        prop_assert_eq!(config.validate(&ctx), via_json.validate(&ctx));
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ReplicationConfiguration::parse(&body, None);
        let _ = ReplicationConfiguration::from_xml(&body, Some(Variant::S3Control));
        let _ = ReplicationConfiguration::from_json(&body, None);
    }

    /// Mangle a valid document (cut, splice, flip a byte) and parse + validate it.
    #[test]
    fn mangled_documents_never_panic(
        config in configuration(),
        json in any::<bool>(),
        cut in any::<proptest::sample::Index>(),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let doc = if json { config.to_json() } else { config.to_xml() }.into_bytes();
        let mut flipped = doc.clone();
        if !flipped.is_empty() {
            let i = at.index(flipped.len());
            flipped[i] = byte;
        }
        let truncated = &doc[..cut.index(doc.len() + 1)];
        for body in [&flipped[..], truncated] {
            if let Ok(c) = ReplicationConfiguration::parse(body, None) {
                let _ = c.validate(&BucketContext::default());
            }
        }
    }
}

#[test]
fn deeply_nested_input_is_refused_not_overflowing() {
    let depth = 200_000;
    let body = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let e = ReplicationConfiguration::from_xml(body.as_bytes(), None).unwrap_err();
    assert_eq!(e.code, s3repl::config::S3ErrorCode::MalformedXml);
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let e = ReplicationConfiguration::from_json(body.as_bytes(), None).unwrap_err();
    assert_eq!(e.code, s3repl::config::S3ErrorCode::MalformedXml);
}
