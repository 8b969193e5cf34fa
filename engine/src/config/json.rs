//! The AWS CLI JSON codec: `--replication-configuration file://x.json` documents and the
//! `--cli-input-json` document (`Bucket` + `ReplicationConfiguration`), in and out.
//!
//! The raw layer is serde structs that deny unknown fields; they are mapped onto the same model
//! as XML through the same shape rules, and failures carry the `MalformedXML` code so that a
//! JSON and an XML body with the same mistake get the same answer.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::codec::{self, RawRule};
use super::error::ValidationError;
use super::model::{
    AccessControlTranslation, DeleteMarkerReplication, Destination, EncryptionConfiguration,
    EventThreshold, Exclusion, Filter, Metrics, ReplicationConfiguration, ReplicationTime, Rule,
    Selector, SourceSelectionCriteria, Status, Tag, Variant,
};

/// The `--cli-input-json` document of `put-bucket-replication` (s3api or s3control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliInput {
    /// `Bucket`: the source bucket name (an Outposts bucket ARN for s3control).
    pub bucket: Option<String>,
    /// `AccountId` (s3control only).
    pub account_id: Option<String>,
    /// `ExpectedBucketOwner` (s3api only).
    pub expected_bucket_owner: Option<String>,
    /// `ReplicationConfiguration`.
    pub configuration: ReplicationConfiguration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JCliInput {
    bucket: Option<String>,
    account_id: Option<String>,
    expected_bucket_owner: Option<String>,
    #[serde(rename = "ContentMD5")]
    _content_md5: Option<String>,
    #[serde(rename = "ChecksumAlgorithm")]
    _checksum_algorithm: Option<String>,
    #[serde(rename = "Token")]
    _token: Option<String>,
    replication_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JConfig {
    role: Option<String>,
    rules: Option<Vec<JRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JRule {
    #[serde(rename = "ID")]
    id: Option<String>,
    priority: Option<i32>,
    prefix: Option<String>,
    filter: Option<JFilter>,
    status: Option<String>,
    source_selection_criteria: Option<JSourceSelection>,
    existing_object_replication: Option<JStatus>,
    destination: Option<JDestination>,
    delete_marker_replication: Option<JStatus>,
    bucket: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JFilter {
    prefix: Option<String>,
    tag: Option<JTag>,
    and: Option<JAnd>,
    not: Option<JNot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JNot {
    prefix: Option<String>,
    tag: Option<JTag>,
    or: Option<JOr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JOr {
    prefixes: Option<Vec<String>>,
    tags: Option<Vec<JTag>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JAnd {
    prefix: Option<String>,
    tags: Option<Vec<JTag>>,
    not: Option<JNot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JSourceSelection {
    sse_kms_encrypted_objects: Option<JStatus>,
    replica_modifications: Option<JStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JStatus {
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JDestination {
    bucket: Option<String>,
    account: Option<String>,
    storage_class: Option<String>,
    access_control_translation: Option<JOwner>,
    encryption_configuration: Option<JEncryption>,
    replication_time: Option<JReplicationTime>,
    metrics: Option<JMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JOwner {
    owner: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JEncryption {
    #[serde(rename = "ReplicaKmsKeyID")]
    replica_kms_key_id: Option<String>,
    #[serde(rename = "UseSourceMultiRegionKey")]
    use_source_multi_region_key: Option<JStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JReplicationTime {
    status: Option<String>,
    time: Option<JMinutes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JMetrics {
    status: Option<String>,
    event_threshold: Option<JMinutes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct JMinutes {
    minutes: Option<i32>,
}

fn json_error(e: &serde_json::Error) -> ValidationError {
    ValidationError::malformed(format_args!("the JSON does not follow the API shape: {e}"))
}

fn missing(parent: &str, name: &str) -> ValidationError {
    ValidationError::malformed(format_args!("{parent} is missing its required {name}"))
}

/// Parses a `ReplicationConfiguration` JSON document, or a `--cli-input-json` document holding
/// one (recognised by its `ReplicationConfiguration` member).
pub(crate) fn parse(body: &[u8], variant: Option<Variant>) -> Result<CliInput, ValidationError> {
    parse_json(body, variant).map_err(worded_for_json)
}

/// S3's code for a document of the wrong shape is `MalformedXML` whatever the client was
/// given (the AWS CLI turns this JSON into XML), but its message speaks of XML: said of JSON
/// here.
fn worded_for_json(mut e: ValidationError) -> ValidationError {
    if let Some(rest) = e.message.strip_prefix(crate::config::error::MALFORMED_XML_MESSAGE) {
        e.message = format!(
            "The JSON you provided was not well-formed or did not follow the AWS CLI's shape (S3 answers MalformedXML for the XML it stands for){rest}"
        );
    }
    e
}

fn parse_json(body: &[u8], variant: Option<Variant>) -> Result<CliInput, ValidationError> {
    codec::check_size(body.len(), variant.unwrap_or(Variant::S3))?;
    let value: Value =
        serde_json::from_slice(codec::strip_bom(body)).map_err(|e| json_error(&e))?;
    let (input, config) = if value.get("ReplicationConfiguration").is_some() {
        let input = JCliInput::deserialize(value).map_err(|e| json_error(&e))?;
        let config = input
            .replication_configuration
            .ok_or_else(|| missing("the input", "ReplicationConfiguration"))?;
        (
            CliInputHead {
                bucket: input.bucket,
                account_id: input.account_id,
                expected_bucket_owner: input.expected_bucket_owner,
            },
            config,
        )
    } else {
        (CliInputHead::default(), value)
    };
    let variant = variant.unwrap_or_else(|| detect_variant(&input, &config));
    codec::check_size(body.len(), variant)?;
    if variant == Variant::S3 && input.account_id.is_some() {
        return Err(ValidationError::malformed("AccountId belongs to the s3control input only"));
    }
    if variant == Variant::S3Control && input.expected_bucket_owner.is_some() {
        return Err(ValidationError::malformed(
            "ExpectedBucketOwner belongs to the s3api input only",
        ));
    }
    let config = JConfig::deserialize(config).map_err(|e| json_error(&e))?;
    let configuration = map_config(config, variant)?;
    codec::strings(&configuration).try_for_each(codec::check_xml_text)?;
    Ok(CliInput {
        bucket: input.bucket,
        account_id: input.account_id,
        expected_bucket_owner: input.expected_bucket_owner,
        configuration,
    })
}

#[derive(Default)]
struct CliInputHead {
    bucket: Option<String>,
    account_id: Option<String>,
    expected_bucket_owner: Option<String>,
}

/// s3control inputs carry `AccountId`, and s3control rules carry `Bucket`.
fn detect_variant(input: &CliInputHead, config: &Value) -> Variant {
    let rule_has_bucket = config
        .get("Rules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| r.get("Bucket").is_some()));
    if input.account_id.is_some() || rule_has_bucket { Variant::S3Control } else { Variant::S3 }
}

fn map_config(c: JConfig, variant: Variant) -> Result<ReplicationConfiguration, ValidationError> {
    let role = c.role.ok_or_else(|| missing("ReplicationConfiguration", "Role"))?;
    let rules = c.rules.unwrap_or_default();
    let raw = rules.into_iter().map(|r| map_rule(r, variant)).collect::<Result<Vec<_>, _>>()?;
    codec::assemble(variant, role, raw)
}

fn status(parent: &str, s: Option<String>) -> Result<Status, ValidationError> {
    let s = s.ok_or_else(|| missing(parent, "Status"))?;
    codec::parse_status(&format!("{parent}/Status"), &s)
}

fn map_rule(r: JRule, variant: Variant) -> Result<RawRule, ValidationError> {
    let filter = r.filter.map(|f| map_filter(f, variant)).transpose()?;
    let selector = codec::selector(r.prefix, filter)?;
    let source_selection_criteria = r
        .source_selection_criteria
        .map(|s| {
            Ok::<_, ValidationError>(SourceSelectionCriteria {
                sse_kms_encrypted_objects: s
                    .sse_kms_encrypted_objects
                    .map(|x| status("SseKmsEncryptedObjects", x.status))
                    .transpose()?,
                replica_modifications: s
                    .replica_modifications
                    .map(|x| status("ReplicaModifications", x.status))
                    .transpose()?,
            })
        })
        .transpose()?;
    let bucket = match (variant, r.bucket) {
        (Variant::S3, Some(_)) => {
            return Err(ValidationError::malformed("rule member Bucket belongs to s3control only"));
        }
        (Variant::S3, None) => None,
        (Variant::S3Control, b) => Some(b.ok_or_else(|| missing("Rule", "Bucket"))?),
    };
    Ok(RawRule {
        id: r.id,
        rule: Rule {
            id: String::new(),
            priority: r.priority,
            selector,
            status: status("Rule", r.status)?,
            source_selection_criteria,
            existing_object_replication: r
                .existing_object_replication
                .map(|x| status("ExistingObjectReplication", x.status))
                .transpose()?,
            delete_marker_replication: r
                .delete_marker_replication
                .map(|x| {
                    let status = x
                        .status
                        .map(|s| codec::parse_status("DeleteMarkerReplication/Status", &s))
                        .transpose()?;
                    Ok::<_, ValidationError>(DeleteMarkerReplication { status })
                })
                .transpose()?,
            destination: map_destination(
                r.destination.ok_or_else(|| missing("Rule", "Destination"))?,
                variant,
            )?,
            bucket,
        },
    })
}

fn map_tag(t: JTag) -> Result<Tag, ValidationError> {
    Ok(Tag {
        key: t.key.ok_or_else(|| missing("Tag", "Key"))?,
        value: t.value.ok_or_else(|| missing("Tag", "Value"))?,
    })
}

fn map_tags(tags: Option<Vec<JTag>>) -> Result<Vec<Tag>, ValidationError> {
    tags.unwrap_or_default().into_iter().map(map_tag).collect()
}

fn map_filter(f: JFilter, variant: Variant) -> Result<Filter, ValidationError> {
    let tag = f.tag.map(map_tag).transpose()?;
    let and = f
        .and
        .map(|a| codec::and(a.prefix, map_tags(a.tags)?, map_not(a.not, variant)?))
        .transpose()?;
    codec::filter(f.prefix, tag, and, map_not(f.not, variant)?)
}

fn map_not(n: Option<JNot>, variant: Variant) -> Result<Option<Exclusion>, ValidationError> {
    let Some(n) = n else { return Ok(None) };
    codec::s3_only(variant, "Not")?;
    let or =
        n.or.map(|o| codec::or(o.prefixes.unwrap_or_default(), map_tags(o.tags)?)).transpose()?;
    codec::not(n.prefix, n.tag.map(map_tag).transpose()?, or).map(Some)
}

fn map_destination(d: JDestination, variant: Variant) -> Result<Destination, ValidationError> {
    Ok(Destination {
        bucket: d.bucket.ok_or_else(|| missing("Destination", "Bucket"))?,
        account: d.account,
        storage_class: d.storage_class.as_deref().map(codec::parse_storage_class).transpose()?,
        access_control_translation: d
            .access_control_translation
            .map(|a| {
                let owner = a.owner.ok_or_else(|| missing("AccessControlTranslation", "Owner"))?;
                Ok::<_, ValidationError>(AccessControlTranslation {
                    owner: codec::parse_owner(&owner)?,
                })
            })
            .transpose()?,
        encryption_configuration: d
            .encryption_configuration
            .map(|e| {
                let use_source_multi_region_key = match e.use_source_multi_region_key {
                    Some(u) => {
                        codec::s3_only(variant, "UseSourceMultiRegionKey")?;
                        Some(status("UseSourceMultiRegionKey", u.status)?)
                    }
                    None => None,
                };
                Ok::<_, ValidationError>(EncryptionConfiguration {
                    replica_kms_key_id: e.replica_kms_key_id,
                    use_source_multi_region_key,
                })
            })
            .transpose()?,
        replication_time: d
            .replication_time
            .map(|rt| {
                Ok::<_, ValidationError>(ReplicationTime {
                    status: status("ReplicationTime", rt.status)?,
                    minutes: rt.time.ok_or_else(|| missing("ReplicationTime", "Time"))?.minutes,
                })
            })
            .transpose()?,
        metrics: d
            .metrics
            .map(|m| {
                Ok::<_, ValidationError>(Metrics {
                    status: status("Metrics", m.status)?,
                    event_threshold: m
                        .event_threshold
                        .map(|t| EventThreshold { minutes: t.minutes }),
                })
            })
            .transpose()?,
    })
}

/// The configuration as the CLI's `--replication-configuration` JSON value.
pub(crate) fn to_value(config: &ReplicationConfiguration) -> Value {
    json!({
        "Role": config.role,
        "Rules": config.rules.iter().map(rule_to_value).collect::<Vec<_>>(),
    })
}

/// One rule as CLI JSON, members in the API model's order.
pub(crate) fn rule_to_value(rule: &Rule) -> Value {
    let mut m = Map::new();
    m.insert("ID".into(), json!(rule.id));
    if let Some(p) = rule.priority {
        m.insert("Priority".into(), json!(p));
    }
    match &rule.selector {
        Selector::Prefix(p) => {
            m.insert("Prefix".into(), json!(p));
        }
        Selector::Filter(f) => {
            m.insert("Filter".into(), filter_to_value(f));
        }
    }
    m.insert("Status".into(), json!(rule.status.as_str()));
    if let Some(ssc) = &rule.source_selection_criteria {
        let mut s = Map::new();
        if let Some(x) = ssc.sse_kms_encrypted_objects {
            s.insert("SseKmsEncryptedObjects".into(), json!({"Status": x.as_str()}));
        }
        if let Some(x) = ssc.replica_modifications {
            s.insert("ReplicaModifications".into(), json!({"Status": x.as_str()}));
        }
        m.insert("SourceSelectionCriteria".into(), Value::Object(s));
    }
    if let Some(x) = rule.existing_object_replication {
        m.insert("ExistingObjectReplication".into(), json!({"Status": x.as_str()}));
    }
    m.insert("Destination".into(), destination_to_value(&rule.destination));
    if let Some(d) = &rule.delete_marker_replication {
        let mut s = Map::new();
        if let Some(x) = d.status {
            s.insert("Status".into(), json!(x.as_str()));
        }
        m.insert("DeleteMarkerReplication".into(), Value::Object(s));
    }
    if let Some(b) = &rule.bucket {
        m.insert("Bucket".into(), json!(b));
    }
    Value::Object(m)
}

fn tag_to_value(t: &Tag) -> Value {
    json!({"Key": t.key, "Value": t.value})
}

fn filter_to_value(f: &Filter) -> Value {
    match f {
        Filter::Empty => json!({}),
        Filter::Prefix(p) => json!({"Prefix": p}),
        Filter::Tag(t) => json!({"Tag": tag_to_value(t)}),
        Filter::And(a) => {
            let mut m = Map::new();
            if let Some(p) = &a.prefix {
                m.insert("Prefix".into(), json!(p));
            }
            if !a.tags.is_empty() {
                m.insert("Tags".into(), Value::Array(a.tags.iter().map(tag_to_value).collect()));
            }
            if let Some(n) = &a.not {
                m.insert("Not".into(), not_to_value(n));
            }
            json!({"And": m})
        }
        Filter::Not(n) => json!({"Not": not_to_value(n)}),
    }
}

fn not_to_value(n: &Exclusion) -> Value {
    match n {
        Exclusion::Prefix(p) => json!({"Prefix": p}),
        Exclusion::Tag(t) => json!({"Tag": tag_to_value(t)}),
        Exclusion::Or(o) => {
            let mut m = Map::new();
            if !o.prefixes.is_empty() {
                m.insert("Prefixes".into(), json!(o.prefixes));
            }
            if !o.tags.is_empty() {
                m.insert("Tags".into(), Value::Array(o.tags.iter().map(tag_to_value).collect()));
            }
            json!({"Or": m})
        }
    }
}

fn minutes_to_value(minutes: Option<i32>) -> Value {
    match minutes {
        Some(m) => json!({"Minutes": m}),
        None => json!({}),
    }
}

fn destination_to_value(d: &Destination) -> Value {
    let mut m = Map::new();
    m.insert("Bucket".into(), json!(d.bucket));
    if let Some(a) = &d.account {
        m.insert("Account".into(), json!(a));
    }
    if let Some(sc) = d.storage_class {
        m.insert("StorageClass".into(), json!(sc.as_str()));
    }
    if let Some(act) = d.access_control_translation {
        m.insert("AccessControlTranslation".into(), json!({"Owner": act.owner.as_str()}));
    }
    if let Some(ec) = &d.encryption_configuration {
        let mut e = Map::new();
        if let Some(k) = &ec.replica_kms_key_id {
            e.insert("ReplicaKmsKeyID".into(), json!(k));
        }
        if let Some(s) = ec.use_source_multi_region_key {
            e.insert("UseSourceMultiRegionKey".into(), json!({"Status": s.as_str()}));
        }
        m.insert("EncryptionConfiguration".into(), Value::Object(e));
    }
    if let Some(rt) = d.replication_time {
        m.insert(
            "ReplicationTime".into(),
            json!({"Status": rt.status.as_str(), "Time": minutes_to_value(rt.minutes)}),
        );
    }
    if let Some(mt) = d.metrics {
        let mut x = Map::new();
        x.insert("Status".into(), json!(mt.status.as_str()));
        if let Some(t) = mt.event_threshold {
            x.insert("EventThreshold".into(), minutes_to_value(t.minutes));
        }
        m.insert("Metrics".into(), Value::Object(x));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shape_errors_of_json_input_speak_of_json_with_s3s_code() {
        for body in [&b"{\"Role\": 5}"[..], b"{not json", b"{\"Rules\": []}"] {
            let e = parse(body, None).unwrap_err();
            assert_eq!(e.code, crate::config::S3ErrorCode::MalformedXml, "{e}");
            assert!(e.message.starts_with("The JSON you provided"), "{e}");
            assert!(!e.message.contains("The XML you provided"), "{e}");
        }
        // XML input keeps S3's own wording.
        let e = crate::config::ReplicationConfiguration::from_xml(b"<oops", None).unwrap_err();
        assert!(e.message.starts_with("The XML you provided"), "{e}");
    }
}
