//! S3's XML answers as the signed client reads them, parsed with `quick-xml` into a small
//! element tree: the error in a 200 body, the `UploadId` of a new upload, the `ETag` of a copy
//! or completed upload, the newest version of a key in `ListObjectVersions`, the uploads of a
//! key in `ListMultipartUploads`.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Elements nested deeper than this are skipped (S3's answers nest three levels).
const MAX_DEPTH: usize = 8;

/// One element: its local name, its own text and its children.
#[derive(Debug, Default)]
pub(super) struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

impl Element {
    /// The text of the first child named `name`.
    pub(super) fn child(&self, name: &str) -> Option<&str> {
        self.children.iter().find(|c| c.name == name).map(|c| c.text.as_str())
    }

    /// The `Code` of an `<Error>` root.
    pub(super) fn error_code(&self) -> Option<&str> {
        (self.name == "Error").then(|| self.child("Code")).flatten()
    }

    /// The children named `name`.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// The root element of `xml`, or `None` when it is not well-formed XML.
pub(super) fn parse(xml: &str) -> Option<Element> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    // Elements opened below `MAX_DEPTH`, whose content is skipped.
    let mut skipped = 0usize;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH || skipped > 0 {
                    skipped += 1;
                } else {
                    let name = e.local_name().as_ref().to_owned();
                    stack.push(Element { name, ..Element::default() });
                }
            }
            Event::Empty(e) => {
                if stack.len() < MAX_DEPTH && skipped == 0 {
                    let name = e.local_name().as_ref().to_owned();
                    let done = Element { name, ..Element::default() };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Some(done),
                    }
                }
            }
            Event::End(_) => {
                if skipped > 0 {
                    skipped -= 1;
                    continue;
                }
                let done = stack.pop()?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Some(done),
                }
            }
            Event::Text(t) => {
                if let (Some(open), 0) = (stack.last_mut(), skipped) {
                    open.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(c) => {
                if let (Some(open), 0) = (stack.last_mut(), skipped) {
                    open.text.push_str(&c.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let mut buf = [0u8; 4];
                let text = match r.resolve_char_ref().ok()? {
                    Some(ch) => &*ch.encode_utf8(&mut buf),
                    None => quick_xml::escape::resolve_predefined_entity(&r)?,
                };
                if let (Some(open), 0) = (stack.last_mut(), skipped) {
                    open.text.push_str(text);
                }
            }
            Event::Eof => return None,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
}

/// One entry of a `ListObjectVersions` answer, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) key: String,
    pub(crate) version_id: String,
    pub(crate) delete_marker: bool,
    pub(crate) is_latest: bool,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    pub(crate) storage_class: Option<String>,
}

/// A listing page's entries and the (key, version id) markers of the next page.
pub(crate) type Listing = (Vec<Listed>, Option<(String, String)>);

/// A `ListObjectVersions` answer: its versions and delete markers in the answer's order (per
/// key newest first), and the markers of the next page when it is truncated. `None` when the
/// body is not such an answer.
pub(crate) fn version_listing(xml: &str) -> Option<Listing> {
    let root = parse(xml)?;
    if root.name != "ListVersionsResult" {
        return None;
    }
    let mut entries = Vec::new();
    for e in &root.children {
        let delete_marker = match e.name.as_str() {
            "Version" => false,
            "DeleteMarker" => true,
            _ => continue,
        };
        entries.push(Listed {
            key: e.child("Key")?.to_owned(),
            // Unversioned buckets list `null` (some servers leave it out).
            version_id: e.child("VersionId").unwrap_or("null").to_owned(),
            delete_marker,
            is_latest: e.child("IsLatest") == Some("true"),
            size: e.child("Size").and_then(|s| s.trim().parse().ok()).unwrap_or(0),
            etag: e.child("ETag").map(str::to_owned),
            last_modified: e.child("LastModified").map(str::to_owned),
            storage_class: e.child("StorageClass").map(str::to_owned),
        });
    }
    let next = (root.child("IsTruncated") == Some("true")).then(|| {
        let key = root.child("NextKeyMarker").map(str::to_owned);
        let version = root.child("NextVersionIdMarker").unwrap_or("").to_owned();
        // A server that leaves the markers out: continue after the last entry listed.
        key.map(|k| (k, version))
            .or_else(|| entries.last().map(|l| (l.key.clone(), l.version_id.clone())))
    });
    Some((entries, next.flatten()))
}

/// The `TagSet` of a `GetObjectTagging` answer, in order; `None` when the body is not one.
pub(crate) fn tag_set(xml: &str) -> Option<Vec<(String, String)>> {
    let root = parse(xml)?;
    if root.name != "Tagging" {
        return None;
    }
    let Some(set) = root.children.iter().find(|c| c.name == "TagSet") else {
        return Some(Vec::new());
    };
    set.all("Tag")
        .map(|t| Some((t.child("Key")?.to_owned(), t.child("Value").unwrap_or("").to_owned())))
        .collect()
}

/// The grants of a `GetObjectAcl` answer (`AccessControlPolicy`), in order; `None` when the
/// body is not one or a grant names no grantee or an unknown permission.
pub(crate) fn acl_grants(xml: &str) -> Option<Vec<super::AclGrant>> {
    use super::{AclGrant, AclPermission, Grantee};
    let root = parse(xml)?;
    if root.name != "AccessControlPolicy" {
        return None;
    }
    let Some(list) = root.children.iter().find(|c| c.name == "AccessControlList") else {
        return Some(Vec::new());
    };
    list.all("Grant")
        .map(|g| {
            let who = g.children.iter().find(|c| c.name == "Grantee")?;
            let grantee = if let Some(id) = who.child("ID") {
                Grantee::CanonicalUser(id.to_owned())
            } else if let Some(uri) = who.child("URI") {
                Grantee::Group(uri.to_owned())
            } else {
                Grantee::Email(who.child("EmailAddress")?.to_owned())
            };
            let permission: AclPermission = g.child("Permission")?.parse().ok()?;
            Some(AclGrant { grantee, permission })
        })
        .collect()
}

/// The text of the root's child `name` (`UploadId`, `ETag`).
pub(super) fn field(xml: &str, name: &str) -> Option<String> {
    parse(xml)?.child(name).map(str::to_owned)
}

/// The `VersionId` of the first `<Version>` entry for exactly `key` in a `ListObjectVersions`
/// answer (entries of one key come newest first; delete markers and other keys are skipped).
pub(super) fn newest_version(xml: &str, key: &str) -> Option<String> {
    parse(xml)?
        .all("Version")
        .find(|v| v.child("Key") == Some(key))
        .and_then(|v| v.child("VersionId"))
        .map(str::to_owned)
}

/// The versions (not delete markers) of exactly `key` in a `ListObjectVersions` answer, in its
/// order (newest first).
pub(super) fn versions(xml: &str, key: &str) -> Vec<String> {
    let Some(root) = parse(xml) else { return Vec::new() };
    root.all("Version")
        .filter(|v| v.child("Key") == Some(key))
        .filter_map(|v| v.child("VersionId").map(str::to_owned))
        .collect()
}

/// The uploads of exactly `key` in a `ListMultipartUploads` answer: (upload id, initiated,
/// the `Initiated` text as S3 wrote it).
pub(super) fn uploads(xml: &str, key: &str) -> Vec<(String, Option<String>)> {
    let Some(root) = parse(xml) else { return Vec::new() };
    root.all("Upload")
        .filter(|u| u.child("Key") == Some(key))
        .filter_map(|u| {
            Some((u.child("UploadId")?.to_owned(), u.child("Initiated").map(str::to_owned)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_listings_keep_the_order_of_versions_and_markers_and_say_where_to_go_on() {
        let xml = r#"<?xml version="1.0"?><ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
          <Name>b</Name><IsTruncated>true</IsTruncated>
          <NextKeyMarker>k&amp;2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
          <DeleteMarker><Key>a</Key><VersionId>d1</VersionId><IsLatest>true</IsLatest><LastModified>2026-01-01T00:00:00.000Z</LastModified></DeleteMarker>
          <Version><Key>a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><Size>12</Size><ETag>"e"</ETag><StorageClass>STANDARD</StorageClass></Version>
          <Version><Key>k&amp;2</Key><IsLatest>true</IsLatest><Size>3</Size></Version>
        </ListVersionsResult>"#;
        let (entries, next) = version_listing(xml).unwrap();
        let kinds: Vec<(&str, &str, bool)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.version_id.as_str(), e.delete_marker))
            .collect();
        assert_eq!(kinds, vec![("a", "d1", true), ("a", "v2", false), ("k&2", "null", false)]);
        assert_eq!(entries[1].size, 12);
        assert_eq!(entries[1].etag.as_deref(), Some("\"e\""));
        assert!(entries[0].is_latest && !entries[1].is_latest);
        assert_eq!(next, Some(("k&2".to_owned(), "v9".to_owned())));
        // Truncated without markers: after the last entry. Not truncated: no next page.
        let bare = xml.replace(
            "<NextKeyMarker>k&amp;2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>",
            "",
        );
        assert_eq!(version_listing(&bare).unwrap().1, Some(("k&2".to_owned(), "null".to_owned())));
        let done = xml.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(version_listing(&done).unwrap().1, None);
        assert!(version_listing("<Error><Code>AccessDenied</Code></Error>").is_none());
        assert!(
            version_listing(
                "<ListVersionsResult><Version><Size>1</Size></Version></ListVersionsResult>"
            )
            .is_none(),
            "an entry without a key"
        );
    }

    #[test]
    fn acl_grants_in_order() {
        use crate::dest::{AclPermission, Grantee};
        let xml = r#"<AccessControlPolicy><Owner><ID>o</ID></Owner><AccessControlList>
          <Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>o</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant>
          <Grant><Grantee xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>
        </AccessControlList></AccessControlPolicy>"#;
        let grants = acl_grants(xml).unwrap();
        assert_eq!(grants.len(), 2);
        assert_eq!(grants[0].grantee, Grantee::CanonicalUser("o".into()));
        assert_eq!(grants[1].permission, AclPermission::Read);
        assert!(acl_grants(&xml.replace("READ<", "SOMETIMES<")).is_none());
        assert!(acl_grants("<Error/>").is_none());
    }

    #[test]
    fn tag_sets_in_order() {
        let xml = "<Tagging><TagSet><Tag><Key>b</Key><Value>2</Value></Tag><Tag><Key>a</Key><Value></Value></Tag></TagSet></Tagging>";
        assert_eq!(
            tag_set(xml).unwrap(),
            vec![("b".into(), "2".into()), ("a".into(), String::new())]
        );
        assert_eq!(tag_set("<Tagging><TagSet/></Tagging>").unwrap(), vec![]);
        assert!(tag_set("<Error/>").is_none());
    }

    fn error_code(xml: &str) -> Option<String> {
        parse(xml)?.error_code().map(str::to_owned)
    }

    #[test]
    fn text_is_unescaped_and_namespaces_ignored() {
        let xml = r#"<?xml version="1.0"?><CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ETag>&quot;a&amp;b&#65;&quot;</ETag><X><![CDATA[<raw>]]></X></CopyObjectResult>"#;
        assert_eq!(field(xml, "ETag").as_deref(), Some("\"a&bA\""));
        assert_eq!(field(xml, "X").as_deref(), Some("<raw>"));
        assert_eq!(field(xml, "Missing"), None);
    }

    #[test]
    fn only_the_root_s_children_are_fields_and_only_error_roots_have_codes() {
        // An `ETag` deeper down is not the answer's.
        let xml = "<R><Part><ETag>inner</ETag></Part></R>";
        assert_eq!(field(xml, "ETag"), None);
        assert_eq!(error_code("<Error><Code>SlowDown</Code></Error>").as_deref(), Some("SlowDown"));
        assert_eq!(error_code("<R><Error><Code>SlowDown</Code></Error></R>"), None);
        assert_eq!(error_code("<R><Code>SlowDown</Code></R>"), None);
    }

    #[test]
    fn malformed_or_truncated_answers_read_as_nothing() {
        for bad in ["", "<R>", "<R><ETag>x</R>", "not xml", "<R>&bogus;</R>", "<R></S>"] {
            assert_eq!(field(bad, "ETag"), None, "{bad}");
        }
        // Deep nesting is skipped, not followed.
        let deep = format!("<R>{}<ETag>x</ETag></R>", "<a>".repeat(50) + &"</a>".repeat(50));
        assert_eq!(field(&deep, "ETag").as_deref(), Some("x"));
    }

    #[test]
    fn versions_of_a_key_are_its_own_versions_newest_first_without_delete_markers() {
        let xml = r#"<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>k</Prefix><DeleteMarker><Key>k</Key><VersionId>dm</VersionId><IsLatest>true</IsLatest></DeleteMarker><Version><Key>k</Key><VersionId>v3</VersionId></Version><Version><Key>k</Key><VersionId>v1</VersionId></Version><Version><Key>k2</Key><VersionId>other</VersionId></Version></ListVersionsResult>"#;
        assert_eq!(versions(xml, "k"), ["v3", "v1"]);
        assert_eq!(newest_version(xml, "k").as_deref(), Some("v3"));
        assert!(versions(xml, "absent").is_empty());
        assert!(versions("not xml", "k").is_empty());
    }
}
