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
