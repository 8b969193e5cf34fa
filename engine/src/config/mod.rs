//! The S3 `ReplicationConfiguration`: model, codecs (XML in both namespaces, AWS CLI JSON) and
//! validation with S3's error codes.
//!
//! ```
//! use s3repl::config::{BucketContext, ReplicationConfiguration};
//!
//! let body = br#"{"Role": "arn:aws:iam::123456789012:role/s3-replication-role",
//!   "Rules": [{"Status": "Enabled", "Priority": 1,
//!              "DeleteMarkerReplication": {"Status": "Disabled"},
//!              "Filter": {"Prefix": ""},
//!              "Destination": {"Bucket": "arn:aws:s3:::my-bucket-backup"}}]}"#;
//! let config = ReplicationConfiguration::parse(body, None)?;
//! config.validate(&BucketContext::default())?;
//! let xml = config.to_xml();
//! assert_eq!(ReplicationConfiguration::parse(xml.as_bytes(), None)?, config);
//! # Ok::<(), s3repl::config::ValidationError>(())
//! ```
//!
//! Parsing checks the shape (what S3 reports as `MalformedXML`); [`ReplicationConfiguration::validate`]
//! checks the semantics. Both return a [`ValidationError`] carrying S3's code.

mod codec;
mod error;
mod json;
mod model;
mod validate;
mod xml;

pub use error::{MALFORMED_XML_MESSAGE, S3ErrorCode, ValidationError};
pub use json::CliInput;
pub use model::{
    AccessControlTranslation, AndOperator, DeleteMarkerReplication, Destination,
    EncryptionConfiguration, EventThreshold, Exclusion, Filter, Metrics, OrOperator, OwnerOverride,
    ReplicationConfiguration, ReplicationTime, Rule, S3_CONTROL_NAMESPACE, S3_NAMESPACE,
    SchemaVersion, Selector, SourceSelectionCriteria, Status, StorageClass, Tag, Variant,
};
pub use validate::{
    BucketContext, DestinationBucket, MAX_ID_CHARS, MAX_PREFIX_BYTES, MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS, RTC_MINUTES, SourceBucket, Versioning,
};

/// The two document syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// S3 REST XML.
    Xml,
    /// AWS CLI JSON.
    Json,
}

impl Format {
    /// Guesses the syntax from the first non-blank byte: `{` is JSON, anything else XML.
    pub fn detect(body: &[u8]) -> Format {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::Json,
            _ => Format::Xml,
        }
    }
}

impl ReplicationConfiguration {
    /// Parses an XML or JSON document, detecting which (see [`Format::detect`]).
    ///
    /// `variant` is the API the document was sent to; `None` infers it from the XML namespace
    /// or from s3control-only JSON members, defaulting to the S3 API.
    pub fn parse(body: &[u8], variant: Option<Variant>) -> Result<Self, ValidationError> {
        match Format::detect(body) {
            Format::Xml => Self::from_xml(body, variant),
            Format::Json => Self::from_json(body, variant),
        }
    }

    /// Parses the S3 XML form (S3 namespace, S3 Control namespace, or none).
    pub fn from_xml(body: &[u8], variant: Option<Variant>) -> Result<Self, ValidationError> {
        xml::parse(body, variant)
    }

    /// Parses the AWS CLI JSON form: a bare configuration or a `--cli-input-json` document.
    pub fn from_json(body: &[u8], variant: Option<Variant>) -> Result<Self, ValidationError> {
        json::parse(body, variant).map(|input| input.configuration)
    }

    /// Serializes as S3 XML in the variant's namespace.
    pub fn to_xml(&self) -> String {
        xml::write(self)
    }

    /// Serializes as the CLI's `--replication-configuration` JSON (pretty-printed).
    pub fn to_json(&self) -> String {
        let value = json::to_value(self);
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    }

    /// Applies S3's semantic checks; bucket-state checks use what `ctx` knows.
    pub fn validate(&self, ctx: &BucketContext) -> Result<(), ValidationError> {
        validate::validate(self, ctx)
    }
}

impl CliInput {
    /// Parses a `--cli-input-json` document (or a bare configuration, leaving the rest empty).
    pub fn from_json(body: &[u8], variant: Option<Variant>) -> Result<Self, ValidationError> {
        json::parse(body, variant)
    }

    /// Serializes as a `--cli-input-json` document.
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        if let Some(a) = &self.account_id {
            m.insert("AccountId".into(), a.clone().into());
        }
        if let Some(b) = &self.bucket {
            m.insert("Bucket".into(), b.clone().into());
        }
        m.insert("ReplicationConfiguration".into(), json::to_value(&self.configuration));
        if let Some(o) = &self.expected_bucket_owner {
            m.insert("ExpectedBucketOwner".into(), o.clone().into());
        }
        let value = serde_json::Value::Object(m);
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    }
}
