//! What a replica carries besides its bytes: user metadata and tags, the content headers,
//! its storage class, its access control list and its Object Lock settings.
//!
//! The engine's log record carries the same types (it re-exports them), so a version's
//! properties travel from the embedding server to the destination without translation.

use std::borrow::Cow;

/// The content headers S3 stores with an object version (its "system-defined metadata" that
/// a writer sets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHeaders {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires` (an HTTP date, as the client sent it). `object_store` has no attribute for it,
    /// so destinations written through it do not receive it (see the compatibility notes).
    pub expires: Option<String>,
}

/// Whether HTTP can carry `v` as a header value (what `http`'s `HeaderValue` accepts: visible
/// bytes, spaces and tabs), checked in place: it runs for every replica and signed request,
/// and building a `HeaderValue` allocates.
pub(crate) fn header_value_ok(v: &str) -> bool {
    // No early exit, so the compiler may process several bytes at a time: every replica's
    // metadata is checked before it is written, and the checks that stopped at the first bad
    // byte took 2,150 instructions per version, these 1,250 (callgrind, issue 30).
    v.bytes().fold(0u8, |bad, b| bad | u8::from((b < 0x20 && b != b'\t') || b == 0x7f)) == 0
}

/// Whether `name` is what `http`'s `HeaderName` accepts (a token); no early exit, as above.
pub(crate) fn header_name_ok(name: &str) -> bool {
    name.bytes().fold(true, |ok, b| {
        ok & (b.is_ascii_alphanumeric()
            | matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            ))
    })
}

impl ContentHeaders {
    /// Each content header by its HTTP name, with its value if set.
    pub(crate) fn named(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("Content-Type", self.content_type.as_deref()),
            ("Content-Encoding", self.content_encoding.as_deref()),
            ("Content-Disposition", self.content_disposition.as_deref()),
            ("Content-Language", self.content_language.as_deref()),
            ("Cache-Control", self.cache_control.as_deref()),
            ("Expires", self.expires.as_deref()),
        ]
    }

    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none()
            && self.content_encoding.is_none()
            && self.content_disposition.is_none()
            && self.content_language.is_none()
            && self.cache_control.is_none()
            && self.expires.is_none()
    }
}

/// A canned ACL (`x-amz-acl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CannedAcl {
    /// `private`.
    Private,
    /// `public-read`.
    PublicRead,
    /// `public-read-write`.
    PublicReadWrite,
    /// `authenticated-read`.
    AuthenticatedRead,
    /// `aws-exec-read`.
    AwsExecRead,
    /// `bucket-owner-read`.
    BucketOwnerRead,
    /// `bucket-owner-full-control`.
    BucketOwnerFullControl,
}

crate::wire_names!(CannedAcl {
    Private => "private",
    PublicRead => "public-read",
    PublicReadWrite => "public-read-write",
    AuthenticatedRead => "authenticated-read",
    AwsExecRead => "aws-exec-read",
    BucketOwnerRead => "bucket-owner-read",
    BucketOwnerFullControl => "bucket-owner-full-control",
});

/// A permission an ACL grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclPermission {
    /// `READ`.
    Read,
    /// `WRITE`.
    Write,
    /// `READ_ACP`.
    ReadAcp,
    /// `WRITE_ACP`.
    WriteAcp,
    /// `FULL_CONTROL`.
    FullControl,
}

crate::wire_names!(AclPermission {
    Read => "READ",
    Write => "WRITE",
    ReadAcp => "READ_ACP",
    WriteAcp => "WRITE_ACP",
    FullControl => "FULL_CONTROL",
});

impl AclPermission {
    /// The request header that grants this permission (`x-amz-grant-read`, ...).
    pub fn header(self) -> &'static str {
        match self {
            AclPermission::Read => "x-amz-grant-read",
            AclPermission::Write => "x-amz-grant-write",
            AclPermission::ReadAcp => "x-amz-grant-read-acp",
            AclPermission::WriteAcp => "x-amz-grant-write-acp",
            AclPermission::FullControl => "x-amz-grant-full-control",
        }
    }
}

/// Who an ACL grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grantee {
    /// A canonical user id.
    CanonicalUser(String),
    /// A predefined group, by URI (`http://acs.amazonaws.com/groups/global/AllUsers`, ...).
    Group(String),
    /// An account by e-mail address (S3 accepts these in a few Regions only).
    Email(String),
}

impl Grantee {
    /// The grantee as an `x-amz-grant-*` header lists it: `id="…"`, `uri="…"` or
    /// `emailAddress="…"`.
    pub fn header_value(&self) -> String {
        match self {
            Grantee::CanonicalUser(id) => format!("id=\"{id}\""),
            Grantee::Group(uri) => format!("uri=\"{uri}\""),
            Grantee::Email(e) => format!("emailAddress=\"{e}\""),
        }
    }
}

/// One grant of an access control list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclGrant {
    /// Who.
    pub grantee: Grantee,
    /// What.
    pub permission: AclPermission,
}

/// An object version's access control list, as the writer set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectAcl {
    /// A canned ACL.
    Canned(CannedAcl),
    /// Explicit grants (the owner's own `FULL_CONTROL` included, as S3 lists it).
    Grants(Vec<AclGrant>),
}

impl ObjectAcl {
    /// The request headers that set this ACL (`PutObjectAcl` or a write).
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            ObjectAcl::Canned(c) => vec![("x-amz-acl".to_owned(), c.as_str().to_owned())],
            ObjectAcl::Grants(grants) => AclPermission::ALL
                .iter()
                .filter_map(|&p| {
                    let who: Vec<String> = grants
                        .iter()
                        .filter(|g| g.permission == p)
                        .map(|g| g.grantee.header_value())
                        .collect();
                    (!who.is_empty()).then(|| (p.header().to_owned(), who.join(", ")))
                })
                .collect(),
        }
    }
}

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// `GOVERNANCE`: users with a special permission may shorten or remove it.
    Governance,
    /// `COMPLIANCE`: nobody may shorten or remove it.
    Compliance,
}

crate::wire_names!(LockMode { Governance => "GOVERNANCE", Compliance => "COMPLIANCE" });

/// An Object Lock retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Retention {
    /// The mode.
    pub mode: LockMode,
    /// The end of the period, milliseconds since the Unix epoch.
    pub retain_until_ms: u64,
}

/// A version's Object Lock settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ObjectLock {
    /// The retention period (`None`: none).
    pub retention: Option<Retention>,
    /// Whether a legal hold is on.
    pub legal_hold: bool,
}

impl ObjectLock {
    /// Whether these settings protect the version at all (a destination that cannot lock
    /// objects must refuse such a replica rather than store it unprotected).
    pub fn protects(&self) -> bool {
        self.retention.is_some() || self.legal_hold
    }
}

/// Settings to give one replica version with per-version calls (after its write, or when they
/// change on the source): each `Some` is applied, each `None` left as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionSettings<'a> {
    /// The tag set.
    pub tags: Option<&'a [(String, String)]>,
    /// The ACL.
    pub acl: Option<&'a ObjectAcl>,
    /// The retention (`Some(None)`: remove it).
    pub retention: Option<Option<Retention>>,
    /// The legal hold, on or off.
    pub legal_hold: Option<bool>,
}

/// Which of a replica's settings its write did not carry (see
/// [`crate::dest::PutOutcome::pending`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// The ACL.
    pub acl: bool,
    /// The retention and legal hold.
    pub lock: bool,
}

impl Pending {
    /// Everything (a replica found at the destination after a crash: what it has is unknown).
    pub const ALL: Pending = Pending { acl: true, lock: true };
    /// Nothing.
    pub const NONE: Pending = Pending { acl: false, lock: false };

    /// Whether nothing is pending.
    pub fn is_none(self) -> bool {
        !(self.acl || self.lock)
    }
}

impl VersionSettings<'_> {
    /// These settings, restricted to what is `pending`.
    #[must_use]
    pub fn only(self, pending: Pending) -> Self {
        VersionSettings {
            tags: self.tags,
            acl: self.acl.filter(|_| pending.acl),
            retention: self.retention.filter(|_| pending.lock),
            legal_hold: self.legal_hold.filter(|_| pending.lock),
        }
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.tags.is_none()
            && self.acl.is_none()
            && self.retention.is_none()
            && self.legal_hold.is_none()
    }

    /// Whether the settings would protect the version (a retention period or a legal hold):
    /// a destination that cannot lock objects must refuse them.
    pub fn protects(&self) -> bool {
        matches!(self.retention, Some(Some(_))) || self.legal_hold == Some(true)
    }
}

/// What a replica carries besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaMeta {
    /// User metadata (`x-amz-meta-*` names without the prefix), plus the replication stamps
    /// the engine adds (source version id, source last-modified, BLAKE3, `REPLICA` status).
    /// Borrowed where the text is static (the stamps' names): a replica's metadata is built
    /// and handed to the store for every version, and each owned name was an allocation there
    /// and another in the store's attributes (issue 30).
    pub user_metadata: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// Object tags.
    pub tags: Vec<(String, String)>,
    /// The content headers.
    pub content: ContentHeaders,
    /// The storage class to write the replica in (`None`: the destination's default).
    pub storage_class: Option<String>,
    /// The ACL to give the replica (`None`: the destination's default, e.g. when the rule
    /// makes the destination account the owner).
    pub acl: Option<ObjectAcl>,
    /// The Object Lock settings to give the replica.
    pub lock: ObjectLock,
}

impl ReplicaMeta {
    /// The first user-metadata entry or content header that an HTTP request cannot carry (a
    /// control character in a value, a name that is not a header token), described; `None`
    /// when every one can be sent. S3 itself could not have received such a value, so only a
    /// malformed record can hold one, and no retry can send it.
    pub(crate) fn unsendable(&self) -> Option<String> {
        for (name, value) in &self.user_metadata {
            if !header_name_ok(name) {
                return Some(format!("user metadata name {name:?} is not an HTTP header name"));
            }
            if !header_value_ok(value) {
                return Some(format!(
                    "the value of user metadata {name:?} cannot be sent over HTTP"
                ));
            }
        }
        self.content
            .named()
            .into_iter()
            .find(|(_, v)| v.is_some_and(|v| !header_value_ok(v)))
            .map(|(header, _)| format!("the value of {header} cannot be sent over HTTP"))
    }

    /// What is applied right after the replica is written: the ACL when there is one, the
    /// retention and legal hold when they protect the replica.
    pub fn after_write(&self) -> VersionSettings<'_> {
        VersionSettings {
            tags: None,
            acl: self.acl.as_ref(),
            retention: self.lock.retention.map(Some),
            legal_hold: self.lock.legal_hold.then_some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks say what the plain definitions say, for every byte, alone and after others.
    #[test]
    fn header_checks_match_their_definitions() {
        for b in 0..=127u8 {
            let value = b == b'\t' || (b >= 0x20 && b != 0x7f);
            let token = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            let text = format!("{}{}", "a".repeat(40), char::from(b));
            assert_eq!(header_value_ok(&text), value, "{b:#x}");
            assert_eq!(header_name_ok(&text), token, "{b:#x}");
        }
        assert!(!header_name_ok("caf\u{e9}"), "a token is ASCII");
        assert!(header_value_ok("caf\u{e9}"), "values may be UTF-8");
    }

    #[test]
    fn names_round_trip() {
        for c in CannedAcl::ALL {
            assert_eq!(c.as_str().parse::<CannedAcl>(), Ok(*c));
        }
        for p in AclPermission::ALL {
            assert_eq!(p.as_str().parse::<AclPermission>(), Ok(*p));
        }
        for m in LockMode::ALL {
            assert_eq!(m.as_str().parse::<LockMode>(), Ok(*m));
        }
        assert!("public".parse::<CannedAcl>().is_err());
    }

    #[test]
    fn values_http_cannot_carry_are_named() {
        let with = |user_metadata: Vec<(&str, &str)>, content_type: Option<&str>| ReplicaMeta {
            user_metadata: user_metadata
                .into_iter()
                .map(|(k, v)| (k.to_owned().into(), v.to_owned().into()))
                .collect(),
            content: ContentHeaders {
                content_type: content_type.map(str::to_owned),
                ..ContentHeaders::default()
            },
            ..ReplicaMeta::default()
        };
        // Sendable: plain text, non-ASCII UTF-8, empty values.
        assert_eq!(
            with(vec![("note", "café; ok"), ("empty", "")], Some("text/plain")).unsendable(),
            None
        );
        let why = with(vec![("note", "two\nlines")], None).unsendable().unwrap();
        assert!(why.contains("\"note\""), "{why}");
        let why = with(vec![("bad name", "v")], None).unsendable().unwrap();
        assert!(why.contains("name"), "{why}");
        let why = with(vec![], Some("text/plain\r\nX-Injected: 1")).unsendable().unwrap();
        assert!(why.contains("Content-Type"), "{why}");
        // The in-place checks agree with the `http` types on every byte, in names and values.
        for b in 0u8..=255 {
            let Ok(c) = std::str::from_utf8(std::slice::from_ref(&b)).map(str::to_owned) else {
                continue;
            };
            let name = format!("n{c}");
            let http_name =
                http::HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()).is_ok();
            let http_value = http::HeaderValue::from_str(&format!("v{c}")).is_ok();
            assert_eq!(
                with(vec![(&name, "v")], None).unsendable().is_none(),
                http_name,
                "name byte {b}"
            );
            assert_eq!(
                with(vec![("n", &format!("v{c}"))], None).unsendable().is_none(),
                http_value,
                "value byte {b}"
            );
        }
        let non_ascii = with(vec![("n", "caf\u{e9}")], None).unsendable().is_none();
        assert_eq!(non_ascii, http::HeaderValue::from_str("caf\u{e9}").is_ok());
    }

    #[tokio::test]
    async fn destinations_refuse_them_before_writing_but_local_files_take_no_metadata() {
        use crate::dest::{Destination, DestinationError};
        let meta = with_note("a\u{7}bell");
        let memory = Destination::in_memory("arn:aws:s3:::m");
        let e = memory.put("k", bytes::Bytes::from_static(b"x"), &meta).await.unwrap_err();
        assert!(
            matches!(
                e,
                DestinationError::Permanent {
                    operation: crate::dest::Operation::Put,
                    refusal: crate::dest::Refusal::NotPermitted,
                    ..
                }
            ),
            "{e}"
        );
        let Err(e) = memory.start_multipart("k", &meta).await else { panic!("started") };
        assert!(
            matches!(
                e,
                DestinationError::Permanent {
                    operation: crate::dest::Operation::MultipartInit,
                    refusal: crate::dest::Refusal::NotPermitted,
                    ..
                }
            ),
            "{e}"
        );
        let root = std::env::temp_dir().join(format!("s3repl-unsendable-{}", std::process::id()));
        let local = Destination::local("arn:aws:s3:::l", &root).unwrap();
        local.put("k", bytes::Bytes::from_static(b"x"), &meta).await.unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }

    fn with_note(value: &str) -> ReplicaMeta {
        ReplicaMeta {
            user_metadata: vec![("note".into(), value.to_owned().into())],
            ..ReplicaMeta::default()
        }
    }

    #[test]
    fn grants_become_one_header_per_permission() {
        let acl = ObjectAcl::Grants(vec![
            AclGrant {
                grantee: Grantee::CanonicalUser("owner".into()),
                permission: AclPermission::FullControl,
            },
            AclGrant {
                grantee: Grantee::Group("http://acs.amazonaws.com/groups/global/AllUsers".into()),
                permission: AclPermission::Read,
            },
            AclGrant {
                grantee: Grantee::Email("a@example.com".into()),
                permission: AclPermission::Read,
            },
        ]);
        assert_eq!(
            acl.headers(),
            vec![
                (
                    "x-amz-grant-read".to_owned(),
                    "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\", emailAddress=\"a@example.com\""
                        .to_owned()
                ),
                ("x-amz-grant-full-control".to_owned(), "id=\"owner\"".to_owned()),
            ]
        );
        assert_eq!(
            ObjectAcl::Canned(CannedAcl::PublicRead).headers(),
            vec![("x-amz-acl".to_owned(), "public-read".to_owned())]
        );
    }
}
