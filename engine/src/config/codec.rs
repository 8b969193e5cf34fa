//! What the XML and JSON codecs share: size limits, scalar parsing, the "at most one of
//! Prefix/Tag/And" and "Prefix or Filter" shape rules, and generated rule IDs.

use super::error::{S3ErrorCode, ValidationError};
use super::model::{
    AndOperator, Exclusion, Filter, OrOperator, OwnerOverride, ReplicationConfiguration, Rule,
    Selector, Status, StorageClass, Tag, Variant,
};

/// Whether XML 1.0 can carry the character (its `Char` production). NUL and most C0 controls
/// cannot appear in an XML document at all, literally or as a character reference.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Refuses text that no XML document could carry, so every accepted configuration has an XML
/// form (S3 accepts configurations only as XML).
pub(crate) fn check_xml_text(text: &str) -> Result<(), ValidationError> {
    match text.chars().find(|c| !is_xml_char(*c)) {
        Some(c) => Err(ValidationError::malformed(format_args!(
            "character U+{:04X} cannot appear in XML",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// Every free-text value of a configuration (for [`check_xml_text`]).
pub(crate) fn strings(config: &ReplicationConfiguration) -> impl Iterator<Item = &str> {
    std::iter::once(config.role.as_str()).chain(config.rules.iter().flat_map(|r| {
        let d = &r.destination;
        let selector: Vec<&str> = match &r.selector {
            Selector::Prefix(p) => vec![p.as_str()],
            Selector::Filter(f) => {
                let excluded = f.exclusion();
                f.prefix()
                    .into_iter()
                    .chain(
                        excluded.into_iter().flat_map(|x| x.prefixes().iter().map(String::as_str)),
                    )
                    .chain(
                        f.tags()
                            .iter()
                            .chain(excluded.into_iter().flat_map(Exclusion::tags))
                            .flat_map(|t| [t.key.as_str(), t.value.as_str()]),
                    )
                    .collect()
            }
        };
        [Some(r.id.as_str()), Some(d.bucket.as_str()), d.account.as_deref(), r.bucket.as_deref()]
            .into_iter()
            .flatten()
            .chain(
                d.encryption_configuration.as_ref().and_then(|e| e.replica_kms_key_id.as_deref()),
            )
            .chain(selector)
    }))
}

/// A rule as decoded, before a missing `ID` is generated.
#[derive(Debug)]
pub(crate) struct RawRule {
    pub(crate) id: Option<String>,
    pub(crate) rule: Rule,
}

/// Refuses bodies over the variant's limit before any parsing.
pub(crate) fn check_size(len: usize, variant: Variant) -> Result<(), ValidationError> {
    let max = variant.max_body_bytes();
    if len > max {
        return Err(ValidationError::new(
            S3ErrorCode::MaxMessageLengthExceeded,
            format!("Your request was too big: {len} bytes, the limit is {max} bytes."),
        ));
    }
    Ok(())
}

/// Drops a UTF-8 byte order mark.
pub(crate) fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// An `xs:int` value (optional sign, digits, surrounding whitespace allowed).
pub(crate) fn parse_int(element: &str, text: &str) -> Result<i32, ValidationError> {
    text.trim().parse::<i32>().map_err(|_| {
        ValidationError::malformed(format_args!("<{element}> must be an integer, got {text:?}"))
    })
}

/// `Enabled` or `Disabled`, case-sensitive.
pub(crate) fn parse_status(element: &str, text: &str) -> Result<Status, ValidationError> {
    text.parse().map_err(|()| {
        ValidationError::malformed(format_args!(
            "<{element}> must be Enabled or Disabled, got {text:?}"
        ))
    })
}

/// A member of the `StorageClass` enumeration; anything else is a schema failure.
pub(crate) fn parse_storage_class(text: &str) -> Result<StorageClass, ValidationError> {
    text.parse().map_err(|()| {
        ValidationError::malformed(format_args!("<StorageClass> {text:?} is not a storage class"))
    })
}

/// `AccessControlTranslation/Owner`: only `Destination` exists.
pub(crate) fn parse_owner(text: &str) -> Result<OwnerOverride, ValidationError> {
    match text {
        "Destination" => Ok(OwnerOverride::Destination),
        _ => Err(ValidationError::malformed(format_args!(
            "<AccessControlTranslation/Owner> must be Destination, got {text:?}"
        ))),
    }
}

/// A rule selects by the V1 rule-level `Prefix` or by a V2 `Filter`: exactly one of them.
pub(crate) fn selector(
    prefix: Option<String>,
    filter: Option<Filter>,
) -> Result<Selector, ValidationError> {
    match (prefix, filter) {
        (Some(p), None) => Ok(Selector::Prefix(p)),
        (None, Some(f)) => Ok(Selector::Filter(f)),
        (Some(_), Some(_)) => Err(ValidationError::malformed(
            "a rule cannot have both a rule-level Prefix and a Filter",
        )),
        (None, None) => Err(ValidationError::malformed(
            "a rule needs a Filter (or, in the V1 schema, a rule-level Prefix)",
        )),
    }
}

/// A `Filter` holds at most one of `Prefix`, `Tag`, `And`, `Not`; none means every object.
pub(crate) fn filter(
    prefix: Option<String>,
    tag: Option<Tag>,
    and: Option<AndOperator>,
    not: Option<Exclusion>,
) -> Result<Filter, ValidationError> {
    match (prefix, tag, and, not) {
        (None, None, None, None) => Ok(Filter::Empty),
        (Some(p), None, None, None) => Ok(Filter::Prefix(p)),
        (None, Some(t), None, None) => Ok(Filter::Tag(t)),
        (None, None, Some(a), None) => Ok(Filter::And(a)),
        (None, None, None, Some(n)) => Ok(Filter::Not(n)),
        _ => Err(ValidationError::malformed(
            "a Filter may hold only one of Prefix, Tag, And and Not",
        )),
    }
}

/// An `And` must hold something; an empty one does not follow the schema. An `And` holding only
/// a `Not` is accepted, as an `And` holding only a `Prefix` is (docs/s3-compatibility.md).
pub(crate) fn and(
    prefix: Option<String>,
    tags: Vec<Tag>,
    not: Option<Exclusion>,
) -> Result<AndOperator, ValidationError> {
    if prefix.is_none() && tags.is_empty() && not.is_none() {
        return Err(ValidationError::malformed("an And needs a Prefix, a Tag or a Not"));
    }
    Ok(AndOperator { prefix, tags, not })
}

/// A `Not` holds exactly one of `Prefix`, `Tag`, `Or` (S3's documentation says so; the model
/// alone would allow several).
pub(crate) fn not(
    prefix: Option<String>,
    tag: Option<Tag>,
    or: Option<OrOperator>,
) -> Result<Exclusion, ValidationError> {
    match (prefix, tag, or) {
        (Some(p), None, None) => Ok(Exclusion::Prefix(p)),
        (None, Some(t), None) => Ok(Exclusion::Tag(t)),
        (None, None, Some(o)) => Ok(Exclusion::Or(o)),
        _ => Err(ValidationError::malformed("a Not holds exactly one of Prefix, Tag and Or")),
    }
}

/// An `Or` lists at least one prefix or tag; an empty one excludes nothing and does not follow
/// the schema ("one or more prefix or tag filters").
pub(crate) fn or(prefixes: Vec<String>, tags: Vec<Tag>) -> Result<OrOperator, ValidationError> {
    if prefixes.is_empty() && tags.is_empty() {
        return Err(ValidationError::malformed("an Or needs at least one Prefix or Tag"));
    }
    Ok(OrOperator { prefixes, tags })
}

/// `Not` and `UseSourceMultiRegionKey` exist in the S3 API's model only, not in S3 Control's.
pub(crate) fn s3_only(variant: Variant, element: &str) -> Result<(), ValidationError> {
    match variant {
        Variant::S3 => Ok(()),
        Variant::S3Control => Err(ValidationError::malformed(format_args!(
            "{element} is not part of the S3 Control API (only the S3 API has it)"
        ))),
    }
}

/// Builds the configuration: at least one rule, and IDs generated where the input had none.
pub(crate) fn assemble(
    variant: Variant,
    role: String,
    raw: Vec<RawRule>,
) -> Result<ReplicationConfiguration, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::malformed("a configuration needs at least one Rule"));
    }
    let explicit: std::collections::HashSet<String> =
        raw.iter().filter_map(|r| r.id.clone()).collect();
    let mut rules = Vec::with_capacity(raw.len());
    for (index, RawRule { id, mut rule }) in raw.into_iter().enumerate() {
        // An empty `<ID/>` is treated like an absent one (S3 would otherwise store a rule
        // that cannot be addressed).
        rule.id = match id {
            Some(id) if !id.is_empty() => id,
            _ => generate_id(&rule, index, &explicit),
        };
        rules.push(rule);
    }
    Ok(ReplicationConfiguration { variant, role, rules })
}

/// Whether rule `index`'s ID is the one [`assemble`] generates for it (the document gave none).
pub(crate) fn is_generated_id(config: &ReplicationConfiguration, index: usize) -> bool {
    let Some(rule) = config.rules.get(index) else { return false };
    let taken: std::collections::HashSet<String> = (0..config.rules.len())
        .filter(|&j| j != index)
        .filter_map(|j| Some(config.rules.get(j)?.id.clone()))
        .collect();
    let blank = Rule { id: String::new(), ..rule.clone() };
    generate_id(&blank, index, &taken) == rule.id
}

/// S3 fills in a missing rule ID. Ours is derived from the rule's content and position, so the
/// same document always gets the same IDs (re-applying a configuration changes nothing), and it
/// never collides with an ID the document gave explicitly.
fn generate_id(rule: &Rule, index: usize, taken: &std::collections::HashSet<String>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"s3repl rule id v1\0");
    hasher.update(&u64::try_from(index).unwrap_or(u64::MAX).to_le_bytes());
    hasher.update(super::json::rule_to_value(rule).to_string().as_bytes());
    let mut reader = hasher.finalize_xof();
    loop {
        let mut bytes = [0u8; 15];
        reader.fill(&mut bytes);
        let id = base32(&bytes);
        if !taken.contains(&id) {
            return id;
        }
    }
}

/// Lower-case RFC 4648 base32 without padding (IDs stay URL- and XML-safe).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            let idx = (buffer >> bits) & 31;
            out.push(char::from(*ALPHABET.get(idx as usize).unwrap_or(&b'a')));
        }
    }
    if bits > 0 {
        let idx = (buffer << (5 - bits)) & 31;
        out.push(char::from(*ALPHABET.get(idx as usize).unwrap_or(&b'a')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"fo"), "mzxq");
        assert_eq!(base32(b"foo"), "mzxw6");
        assert_eq!(base32(b"foob"), "mzxw6yq");
        assert_eq!(base32(b"fooba"), "mzxw6ytb");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn integers_follow_xs_int() {
        assert_eq!(parse_int("Priority", " 7 ").unwrap(), 7);
        assert_eq!(parse_int("Priority", "-3").unwrap(), -3);
        assert_eq!(parse_int("Priority", "+3").unwrap(), 3);
        for bad in ["", "1.0", "one", "2147483648", "0x10"] {
            assert_eq!(parse_int("Priority", bad).unwrap_err().code, S3ErrorCode::MalformedXml);
        }
    }
}
