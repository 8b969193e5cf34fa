//! The one error that parsing and validating a configuration can produce, with S3's codes.

use std::fmt;

/// The S3 error codes a `PutBucketReplication` can answer with for a bad configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum S3ErrorCode {
    /// Not well-formed XML, or it does not follow the published schema.
    MalformedXml,
    /// A semantic rule of replication is broken.
    InvalidRequest,
    /// A value is out of range or of the wrong form.
    InvalidArgument,
    /// A tag key or value breaks the tagging limits.
    InvalidTag,
    /// A storage class that cannot hold replicas.
    InvalidStorageClass,
    /// The body is larger than S3 accepts for this call.
    MaxMessageLengthExceeded,
}

impl S3ErrorCode {
    /// The code exactly as S3 spells it in `<Code>`.
    pub fn as_str(self) -> &'static str {
        match self {
            S3ErrorCode::MalformedXml => "MalformedXML",
            S3ErrorCode::InvalidRequest => "InvalidRequest",
            S3ErrorCode::InvalidArgument => "InvalidArgument",
            S3ErrorCode::InvalidTag => "InvalidTag",
            S3ErrorCode::InvalidStorageClass => "InvalidStorageClass",
            S3ErrorCode::MaxMessageLengthExceeded => "MaxMessageLengthExceeded",
        }
    }

    /// The HTTP status S3 answers with (400 for all of these).
    pub fn http_status(self) -> u16 {
        400
    }
}

impl fmt::Display for S3ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// S3's generic `MalformedXML` message; details are appended after it.
pub const MALFORMED_XML_MESSAGE: &str =
    "The XML you provided was not well-formed or did not validate against our published schema";

/// Why a configuration was refused: S3's error code, a message, and the rule it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}{}", self.whereabouts())]
pub struct ValidationError {
    /// The S3 error code.
    pub code: S3ErrorCode,
    /// A message in S3's wording where it is known, naming the element at fault.
    pub message: String,
    /// The `ID` of the rule at fault, when the fault lies in one rule.
    pub rule_id: Option<String>,
    /// When the rule at fault had no `ID` in the document (`rule_id` is then one the codec
    /// generated, which the user never wrote): its position among the rules, from 1.
    pub unnamed_rule: Option<usize>,
}

impl ValidationError {
    /// An error with the given code and message, not tied to a rule.
    pub fn new(code: S3ErrorCode, message: impl Into<String>) -> Self {
        ValidationError { code, message: message.into(), rule_id: None, unnamed_rule: None }
    }

    /// Which rule, as the user would find it in the document.
    fn whereabouts(&self) -> String {
        match (self.unnamed_rule, &self.rule_id) {
            (Some(n), _) => format!(" (rule #{n}, which has no ID)"),
            (None, Some(id)) => format!(" (rule {id:?})"),
            (None, None) => String::new(),
        }
    }

    /// `MalformedXML` with S3's generic message followed by what exactly was wrong.
    pub fn malformed(detail: impl fmt::Display) -> Self {
        ValidationError::new(
            S3ErrorCode::MalformedXml,
            format!("{MALFORMED_XML_MESSAGE}: {detail}"),
        )
    }

    /// The same error, attributed to a rule.
    #[must_use]
    pub fn for_rule(mut self, rule_id: &str) -> Self {
        self.rule_id = Some(rule_id.to_owned());
        self
    }
}
