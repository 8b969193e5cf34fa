//! Validation: the semantic checks S3 applies to a parsed configuration, with S3's error codes.
//!
//! Checks run in a fixed order and the first failure is returned, as S3 answers one error per
//! request: document-level limits, then each rule in document order (schema version, lengths,
//! tags, destination, encryption, RTC/metrics, Outposts restrictions), then cross-rule checks
//! (unique IDs and priorities, V1 prefix overlap and single destination), and last the checks
//! that need bucket state from a [`BucketContext`]. Where S3's wording is known the message is
//! S3's; every guess is listed in `docs/s3-compatibility.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::error::{S3ErrorCode, ValidationError};
use super::model::{
    Destination, ReplicationConfiguration, Rule, SchemaVersion, Selector, Status, Variant,
};

/// Longest rule `ID`, in characters.
pub const MAX_ID_CHARS: usize = 255;
/// Longest prefix (rule-level or in a filter), in bytes: S3's maximum key length.
pub const MAX_PREFIX_BYTES: usize = 1024;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY_CHARS: usize = 128;
/// Longest tag value, in characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// The only value S3 accepts for `ReplicationTime/Time/Minutes` and `EventThreshold/Minutes`.
pub const RTC_MINUTES: i32 = 15;

const SCHEMA_SUFFIX: &str = "cannot be used for this version of Cross Region Replication configuration schema. Please refer to S3 Developer Guide for more information.";
const REQUIRED_SUFFIX: &str = "must be specified for this version of Cross Region Replication configuration schema. Please refer to S3 Developer Guide for more information.";

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Versioning {
    /// Versioning is on.
    Enabled,
    /// Versioning was on and is suspended.
    Suspended,
    /// Versioning was never enabled.
    Unversioned,
}

/// What the embedding server knows about the source bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBucket {
    /// The source bucket name (the Outposts bucket ARN for S3 Control).
    pub bucket: String,
    /// Its versioning state.
    pub versioning: Versioning,
    /// Whether Object Lock is enabled (S3 accepts replication on such buckets).
    #[serde(default)]
    pub object_lock: bool,
}

/// What the embedding server knows about one destination bucket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationBucket {
    /// Its versioning state.
    pub versioning: Versioning,
    /// The owning account, when known.
    #[serde(default)]
    pub account: Option<String>,
    /// Whether Object Lock is enabled.
    #[serde(default)]
    pub object_lock: bool,
}

/// Bucket state supplied by the embedding server for the checks S3 makes against buckets.
///
/// Every part is optional: checks whose facts are unknown are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketContext {
    /// The account making the request (the source bucket owner).
    #[serde(default)]
    pub account: Option<String>,
    /// The source bucket.
    #[serde(default)]
    pub source: Option<SourceBucket>,
    /// Destination buckets the server knows, keyed by bucket name (or full ARN; for S3 Control
    /// the access point ARN). `None` means destinations are unknown and their checks are
    /// skipped; `Some` means a bucket missing from the map does not exist.
    #[serde(default)]
    pub buckets: Option<BTreeMap<String, DestinationBucket>>,
}

/// Checks a configuration as S3's `PutBucketReplication` does; returns the first failure.
pub(crate) fn validate(
    config: &ReplicationConfiguration,
    ctx: &BucketContext,
) -> Result<(), ValidationError> {
    checks(config, ctx).map_err(|e| name_unnamed_rules(e, config))
}

/// Rules the document gave no `ID` carry one the codec generated, which the user never saw:
/// an error names such a rule by its position instead.
fn name_unnamed_rules(
    mut e: ValidationError,
    config: &ReplicationConfiguration,
) -> ValidationError {
    let quoted = |id: &str| e.message.contains(&format!("{id:?}"));
    let concerned =
        |rule: &Rule| e.rule_id.as_deref() == Some(rule.id.as_str()) || quoted(&rule.id);
    let unnamed: Vec<(usize, String)> = (0..config.rules.len())
        .filter(|&i| config.rules.get(i).is_some_and(concerned))
        .filter(|&i| super::codec::is_generated_id(config, i))
        .filter_map(|i| Some((i + 1, config.rules.get(i)?.id.clone())))
        .collect();
    for (n, id) in unnamed {
        e.message = e.message.replace(&format!("{id:?}"), &format!("#{n} (no ID given)"));
        if e.rule_id.as_deref() == Some(id.as_str()) {
            e.unnamed_rule = Some(n);
        }
    }
    e
}

fn checks(config: &ReplicationConfiguration, ctx: &BucketContext) -> Result<(), ValidationError> {
    let variant = config.variant;
    if config.rules.len() > variant.max_rules() {
        return Err(ValidationError::new(
            S3ErrorCode::InvalidRequest,
            format!("Number of defined replication rules cannot exceed {}", variant.max_rules()),
        ));
    }
    check_role(&config.role)?;
    let schema = config.schema_version();
    for rule in &config.rules {
        check_rule(rule, variant, schema).map_err(|e| e.for_rule(&rule.id))?;
    }
    check_across_rules(config, schema)?;
    check_context(config, ctx)
}

fn err(code: S3ErrorCode, message: impl Into<String>) -> ValidationError {
    ValidationError::new(code, message)
}

fn invalid_request(message: impl Into<String>) -> ValidationError {
    err(S3ErrorCode::InvalidRequest, message)
}

fn invalid_argument(message: impl Into<String>) -> ValidationError {
    err(S3ErrorCode::InvalidArgument, message)
}

macro_rules! pattern {
    ($name:ident, $re:literal) => {
        static $name: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new($re).ok());
    };
}

/// AWS partitions whose ARNs we accept.
const PARTITION: &str = "aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc";

pattern!(
    ROLE_ARN,
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:role/([\x21-\x7E]{0,510}/)?[A-Za-z0-9_+=,.@-]{1,64}$"
);
pattern!(
    S3_BUCKET_ARN,
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):s3:::(.*)$"
);
pattern!(
    OUTPOSTS_AP_ARN,
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):s3-outposts:[a-z0-9-]{1,32}:[0-9]{12}:outpost/op-[0-9a-z]{1,32}/accesspoint/[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$"
);
pattern!(
    KMS_ARN,
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):kms:[a-z0-9-]{1,32}:[0-9]{12}:(key/[A-Za-z0-9-]{1,256}|alias/[A-Za-z0-9/_-]{1,250})$"
);
pattern!(ACCOUNT_ID, r"^[0-9]{12}$");
pattern!(TAG_CHARS, r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$");

fn matches(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(s))
}

fn check_role(role: &str) -> Result<(), ValidationError> {
    if matches(&ROLE_ARN, role) {
        Ok(())
    } else {
        Err(invalid_argument(format!(
            "Invalid Role specified in replication configuration: {role:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>, the account 12 digits)"
        )))
    }
}

fn check_rule(rule: &Rule, variant: Variant, schema: SchemaVersion) -> Result<(), ValidationError> {
    if rule.id.chars().count() > MAX_ID_CHARS {
        return Err(invalid_argument(format!("Rule Id cannot be greater than {MAX_ID_CHARS}")));
    }
    check_schema(rule, variant, schema)?;
    check_selector(rule)?;
    if variant == Variant::S3Control {
        check_outposts(rule)?;
    }
    check_destination(rule, variant)?;
    check_encryption(rule)?;
    check_rtc(&rule.destination)
}

/// Which elements each schema version allows or requires (errors 2–5 and the mixing rule).
fn check_schema(
    rule: &Rule,
    variant: Variant,
    schema: SchemaVersion,
) -> Result<(), ValidationError> {
    let not_in_v1 = |element: &str| invalid_request(format!("{element} {SCHEMA_SUFFIX}"));
    match rule.schema_version() {
        SchemaVersion::V1 if variant == Variant::S3Control => Err(invalid_request(
            "S3 on Outposts replication rules need a Filter: the rule-level Prefix is not supported",
        )),
        SchemaVersion::V1 if schema == SchemaVersion::V2 => Err(not_in_v1("Prefix")),
        SchemaVersion::V1 => {
            let ssc = rule.source_selection_criteria.as_ref();
            if rule.priority.is_some() {
                Err(not_in_v1("Priority"))
            } else if rule.delete_marker_replication.is_some() {
                Err(not_in_v1("DeleteMarkerReplication"))
            } else if ssc.is_some_and(|s| s.replica_modifications.is_some()) {
                Err(not_in_v1("ReplicaModifications"))
            } else if rule.destination.replication_time.is_some() {
                Err(not_in_v1("ReplicationTime"))
            } else if rule.destination.metrics.is_some() {
                Err(not_in_v1("Metrics"))
            } else if rule.existing_object_replication.is_some() {
                Err(not_in_v1("ExistingObjectReplication"))
            } else {
                Ok(())
            }
        }
        SchemaVersion::V2 => match rule.priority {
            None => Err(invalid_request(format!("Priority {REQUIRED_SUFFIX}"))),
            Some(p) if p < 0 => Err(invalid_request(format!(
                "Priority must be between 0 and {}, got {p}.",
                i32::MAX
            ))),
            Some(_) if rule.delete_marker_replication.is_none() => {
                Err(invalid_request(format!("DeleteMarkerReplication {REQUIRED_SUFFIX}")))
            }
            Some(_) => Ok(()),
        },
    }
}

/// Prefix lengths, tag limits and delete markers with tag filters (errors 6, 10, 28, 29).
fn check_selector(rule: &Rule) -> Result<(), ValidationError> {
    let prefix = match &rule.selector {
        Selector::Prefix(p) => Some(p.as_str()),
        Selector::Filter(f) => f.prefix(),
    };
    let excluded = rule.selector.exclusion();
    let excluded_prefixes = excluded.map_or(&[][..], super::model::Exclusion::prefixes);
    if prefix
        .into_iter()
        .chain(excluded_prefixes.iter().map(String::as_str))
        .any(|p| p.len() > MAX_PREFIX_BYTES)
    {
        return Err(invalid_argument(format!(
            "Rule prefix cannot be longer than maximum allowed key length of {MAX_PREFIX_BYTES}"
        )));
    }
    let tags = rule.selector.tags();
    check_tags(tags, true)?;
    // Exclusion tags (`Not/Tag`, `Not/Or/Tag`) follow the same limits; one key may appear with
    // several values there, since any of them excludes (docs/s3-compatibility.md).
    let excluded_tags = excluded.map_or(&[][..], super::model::Exclusion::tags);
    check_tags(excluded_tags, false)?;
    let dmr_enabled = rule
        .delete_marker_replication
        .as_ref()
        .is_some_and(super::model::DeleteMarkerReplication::is_enabled);
    if dmr_enabled && !(tags.is_empty() && excluded_tags.is_empty()) {
        return Err(invalid_request(
            "Delete marker replication is not supported if any Tag filter is specified. Please refer to S3 Developer Guide for more information.",
        ));
    }
    Ok(())
}

/// Tag key and value limits; `unique_keys`: a key may appear once (required tags).
fn check_tags(tags: &[super::model::Tag], unique_keys: bool) -> Result<(), ValidationError> {
    let mut seen = HashSet::with_capacity(tags.len());
    for tag in tags {
        let key_chars = tag.key.chars().count();
        if key_chars == 0 {
            return Err(err(
                S3ErrorCode::InvalidTag,
                "The TagKey you have provided is invalid: it is empty",
            ));
        }
        if key_chars > MAX_TAG_KEY_CHARS {
            return Err(err(
                S3ErrorCode::InvalidTag,
                format!("The TagKey you have provided is too long, max {MAX_TAG_KEY_CHARS}"),
            ));
        }
        if tag.value.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(err(
                S3ErrorCode::InvalidTag,
                format!("The TagValue you have provided is too long, max {MAX_TAG_VALUE_CHARS}"),
            ));
        }
        if !matches(&TAG_CHARS, &tag.key) {
            return Err(err(
                S3ErrorCode::InvalidTag,
                format!("The TagKey you have provided is invalid: {:?}", tag.key),
            ));
        }
        if !matches(&TAG_CHARS, &tag.value) {
            return Err(err(
                S3ErrorCode::InvalidTag,
                format!("The TagValue you have provided is invalid: {:?}", tag.value),
            ));
        }
        if unique_keys && !seen.insert(tag.key.as_str()) {
            return Err(invalid_request(format!(
                "Duplicate Tag Keys are not allowed: {:?}",
                tag.key
            )));
        }
    }
    Ok(())
}

/// Features S3 on Outposts does not support (error 31).
fn check_outposts(rule: &Rule) -> Result<(), ValidationError> {
    let unsupported = |what: &str| {
        invalid_request(format!("{what} is not supported for S3 on Outposts replication"))
    };
    let d = &rule.destination;
    let ssc = rule.source_selection_criteria.as_ref();
    if d.replication_time.is_some() {
        return Err(unsupported("ReplicationTime (S3 RTC)"));
    }
    if d.metrics.is_some_and(|m| m.event_threshold.is_some()) {
        return Err(unsupported("Metrics/EventThreshold"));
    }
    if ssc.is_some_and(|s| s.sse_kms_encrypted_objects.is_some()) {
        return Err(unsupported("SseKmsEncryptedObjects"));
    }
    if d.encryption_configuration.is_some() {
        return Err(unsupported("EncryptionConfiguration"));
    }
    if d.access_control_translation.is_some() {
        return Err(unsupported("AccessControlTranslation"));
    }
    if rule.existing_object_replication.is_some() {
        return Err(unsupported("ExistingObjectReplication"));
    }
    match &rule.bucket {
        Some(b) if matches(&OUTPOSTS_AP_ARN, b) => Ok(()),
        Some(b) => {
            Err(invalid_argument(format!("Invalid source access point ARN in rule Bucket: {b:?}")))
        }
        None => Err(ValidationError::malformed("the rule is missing its required <Bucket>")),
    }
}

/// The destination bucket name named by a destination ARN, for the S3 API.
fn s3_bucket_name(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:").and_then(|rest| {
        let (partition, rest) = rest.split_once(':')?;
        PARTITION.split('|').any(|p| p == partition).then_some(())?;
        rest.strip_prefix("s3:::")
    })
}

/// S3's bucket naming rules (general purpose buckets).
pub(crate) fn is_valid_bucket_name(name: &str) -> bool {
    let len_ok = (3..=63).contains(&name.len());
    let chars_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends_ok = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    let ip_like = name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok());
    let reserved = name.contains("..")
        || name.starts_with("xn--")
        || name.starts_with("sthree-")
        || name.starts_with("amzn-s3-demo-")
        || ["-s3alias", "--ol-s3", "--x-s3", ".mrap"].iter().any(|s| name.ends_with(s));
    len_ok && chars_ok && ends_ok && !ip_like && !reserved
}

/// Destination ARN, account and storage class (errors 21, 25, storage classes).
fn check_destination(rule: &Rule, variant: Variant) -> Result<(), ValidationError> {
    let d = &rule.destination;
    match variant {
        Variant::S3 => {
            if !matches(&S3_BUCKET_ARN, &d.bucket) {
                return Err(invalid_argument(format!(
                    "Invalid bucket ARN {:?}: the destination must be arn:aws:s3:::<bucket>",
                    d.bucket
                )));
            }
            if !s3_bucket_name(&d.bucket).is_some_and(is_valid_bucket_name) {
                return Err(invalid_argument(format!(
                    "The specified bucket is not valid: {:?}",
                    d.bucket
                )));
            }
        }
        Variant::S3Control => {
            if !matches(&OUTPOSTS_AP_ARN, &d.bucket) {
                return Err(invalid_argument(format!(
                    "Invalid bucket ARN {:?}: the destination must be an S3 on Outposts access point ARN",
                    d.bucket
                )));
            }
            if rule.bucket.as_deref() == Some(d.bucket.as_str()) {
                return Err(invalid_request(
                    "Destination bucket cannot be the same as the source bucket.",
                ));
            }
        }
    }
    if let Some(account) = &d.account
        && !matches(&ACCOUNT_ID, account)
    {
        return Err(invalid_argument(format!(
            "Invalid Account {account:?}: an account id is 12 digits"
        )));
    }
    if let Some(sc) = d.storage_class
        && !sc.is_replication_target(variant)
    {
        return Err(err(
            S3ErrorCode::InvalidStorageClass,
            format!(
                "The storage class you specified is not valid: {sc} cannot hold replicas{}",
                if variant == Variant::S3Control {
                    " on S3 on Outposts (only OUTPOSTS)"
                } else {
                    ""
                }
            ),
        ));
    }
    if d.access_control_translation.is_some() && d.account.is_none() {
        return Err(invalid_request(
            "Account must be specified if the Owner in AccessControlTranslation has a value",
        ));
    }
    Ok(())
}

/// SSE-KMS selection and the replica key (errors 18–20).
fn check_encryption(rule: &Rule) -> Result<(), ValidationError> {
    let sse_kms = rule
        .source_selection_criteria
        .as_ref()
        .is_some_and(|s| s.sse_kms_encrypted_objects.is_some());
    let encryption = rule.destination.encryption_configuration.as_ref();
    let key = encryption.map(|e| e.replica_kms_key_id.as_deref());
    // With `UseSourceMultiRegionKey` Enabled the replica key comes from the source object's
    // key, so `ReplicaKmsKeyID` may be left out (a guess: docs/s3-compatibility.md).
    let multi_region =
        encryption.is_some_and(super::model::EncryptionConfiguration::uses_source_multi_region_key);
    match (sse_kms, key) {
        (true, Some(None)) if multi_region => Ok(()),
        (true, None | Some(None)) => Err(invalid_request(
            "ReplicaKmsKeyID must be specified if SseKmsEncryptedObjects tag is present.",
        )),
        (false, Some(_)) => Err(invalid_request(
            "SseKmsEncryptedObjects must be specified if EncryptionConfiguration is present.",
        )),
        (true, Some(Some(k))) if !matches(&KMS_ARN, k) => {
            Err(invalid_argument(format!("Invalid ReplicaKmsKeyID ARN: {k:?}")))
        }
        _ => Ok(()),
    }
}

/// Replication Time Control and metrics (errors 14–17).
fn check_rtc(d: &Destination) -> Result<(), ValidationError> {
    let rtc = d.replication_time;
    if rtc.is_some() && d.metrics.is_none() {
        return Err(invalid_request(
            "Replication destination must contain both ReplicationTime and Metrics or neither.",
        ));
    }
    let rtc_enabled = rtc.is_some_and(|r| r.status == Status::Enabled);
    if let Some(m) = d.metrics
        && m.event_threshold.is_some()
        && !rtc_enabled
    {
        return Err(invalid_argument(
            "Metrics cannot contain an event threshold when ReplicationTime is not specified or Disabled",
        ));
    }
    if let Some(r) = rtc
        && (r.minutes.is_some_and(|m| m != RTC_MINUTES) || (rtc_enabled && r.minutes.is_none()))
    {
        return Err(invalid_argument(format!(
            "Invalid time minute value: ReplicationTime/Time/Minutes must be {RTC_MINUTES}"
        )));
    }
    if rtc_enabled {
        let Some(m) = d.metrics else { return Ok(()) };
        if m.status != Status::Enabled {
            return Err(invalid_request(
                "Metrics must be Enabled when ReplicationTime is Enabled.",
            ));
        }
        match m.event_threshold {
            None => {
                return Err(invalid_argument("ReplicationMetrics must contain an event threshold"));
            }
            Some(t) if t.minutes != Some(RTC_MINUTES) => {
                return Err(invalid_argument(format!(
                    "Invalid event threshold minute value: EventThreshold/Minutes must be {RTC_MINUTES}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Unique IDs and priorities; V1: no overlapping prefixes, one destination (errors 7, 8, 12, 13).
fn check_across_rules(
    config: &ReplicationConfiguration,
    schema: SchemaVersion,
) -> Result<(), ValidationError> {
    let mut ids = HashSet::with_capacity(config.rules.len());
    let mut priorities: HashMap<i32, &str> = HashMap::with_capacity(config.rules.len());
    for rule in &config.rules {
        if !ids.insert(rule.id.as_str()) {
            return Err(invalid_request("Rule Id must be unique").for_rule(&rule.id));
        }
        if let Some(p) = rule.priority
            && let Some(other) = priorities.insert(p, &rule.id)
        {
            return Err(invalid_request(format!(
                "Found duplicate priority {p} for rules {other:?} and {:?}",
                rule.id
            ))
            .for_rule(&rule.id));
        }
    }
    if schema == SchemaVersion::V1 {
        let mut seen: Vec<&Rule> = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            for earlier in &seen {
                let (a, b) = (earlier.selector.prefix(), rule.selector.prefix());
                if a.starts_with(b) || b.starts_with(a) {
                    return Err(invalid_request(format!(
                        "Found overlapping prefixes '{a}' and '{b}'"
                    ))
                    .for_rule(&rule.id));
                }
                if earlier.destination.bucket != rule.destination.bucket {
                    return Err(invalid_request(
                        "The destination bucket must be same for all rules",
                    )
                    .for_rule(&rule.id));
                }
            }
            seen.push(rule);
        }
    }
    Ok(())
}

/// Checks against bucket state (errors 22–24, 26).
fn check_context(
    config: &ReplicationConfiguration,
    ctx: &BucketContext,
) -> Result<(), ValidationError> {
    if let Some(source) = &ctx.source {
        if source.versioning != Versioning::Enabled {
            return Err(invalid_request(
                "Versioning must be 'Enabled' on the bucket to apply a replication configuration",
            ));
        }
        if config.variant == Variant::S3 {
            for rule in &config.rules {
                if s3_bucket_name(&rule.destination.bucket) == Some(source.bucket.as_str()) {
                    return Err(invalid_request(
                        "Destination bucket cannot be the same as the source bucket.",
                    )
                    .for_rule(&rule.id));
                }
            }
        }
    }
    let Some(buckets) = &ctx.buckets else { return Ok(()) };
    for rule in &config.rules {
        let arn = rule.destination.bucket.as_str();
        let known =
            buckets.get(arn).or_else(|| s3_bucket_name(arn).and_then(|name| buckets.get(name)));
        match known {
            None => {
                return Err(invalid_request("Destination bucket must exist.").for_rule(&rule.id));
            }
            Some(b) if b.versioning != Versioning::Enabled => {
                return Err(invalid_request("Destination bucket must have versioning enabled.")
                    .for_rule(&rule.id));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26, item 9: a rule the document gave no ID is named by its position, not by the
    /// ID the codec generated for it; a rule with an ID is named by it.
    #[test]
    fn errors_name_rules_without_an_id_by_position() {
        let rule = |id: &str, priority: u32| {
            format!(
                r#"{{{id}"Priority":{priority},"Status":"Enabled","Filter":{{}},
                   "DeleteMarkerReplication":{{"Status":"Disabled"}},
                   "Destination":{{"Bucket":"arn:aws:s3:::dst"}}}}"#
            )
        };
        let doc = |rules: &[String]| {
            let body = format!(
                r#"{{"Role":"arn:aws:iam::123456789012:role/r","Rules":[{}]}}"#,
                rules.join(",")
            );
            ReplicationConfiguration::parse(body.as_bytes(), None)
                .and_then(|c| c.validate(&BucketContext::default()))
                .expect_err("duplicate priorities")
        };
        let e = doc(&[rule("", 1), rule("", 1)]);
        assert_eq!(e.unnamed_rule, Some(2), "{e}");
        assert!(e.message.contains("#1 (no ID given) and #2 (no ID given)"), "{e}");
        assert!(e.to_string().ends_with("(rule #2, which has no ID)"), "{e}");
        assert!(!e.to_string().contains(e.rule_id.as_deref().unwrap_or("-")), "{e}");
        let named = doc(&[rule(r#""ID":"first","#, 1), rule(r#""ID":"second","#, 1)]);
        assert_eq!((named.unnamed_rule, named.rule_id.as_deref()), (None, Some("second")));
        assert!(named.to_string().ends_with(r#"(rule "second")"#), "{named}");
        let mixed = doc(&[rule(r#""ID":"first","#, 1), rule("", 1)]);
        assert_eq!(mixed.unnamed_rule, Some(2), "{mixed}");
        assert!(mixed.message.contains(r#""first" and #2 (no ID given)"#), "{mixed}");
    }

    #[test]
    fn patterns_compile() {
        for re in [&ROLE_ARN, &S3_BUCKET_ARN, &OUTPOSTS_AP_ARN, &KMS_ARN, &ACCOUNT_ID, &TAG_CHARS] {
            assert!(re.is_some());
        }
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket-backup", "a.b.c", "0bucket9", &"a".repeat(63)] {
            assert!(is_valid_bucket_name(good), "{good}");
        }
        for bad in [
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            "a..b",
            "192.168.5.4",
            "xn--ab",
            "ab-s3alias",
            "ab--ol-s3",
            &"a".repeat(64),
            "sthree-ab",
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn bucket_arn_partitions() {
        assert_eq!(s3_bucket_name("arn:aws:s3:::b1"), Some("b1"));
        assert_eq!(s3_bucket_name("arn:aws-cn:s3:::b1"), Some("b1"));
        assert_eq!(s3_bucket_name("arn:nope:s3:::b1"), None);
        assert_eq!(s3_bucket_name("b1"), None);
    }
}
