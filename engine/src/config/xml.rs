//! The XML codec: S3 namespace, S3 Control namespace, or no namespace, in and out.
//!
//! Parsing goes through a small element tree built from `quick-xml` events, then a strict
//! mapping onto the model: an unknown, repeated or misplaced element is `MalformedXML`, never
//! ignored, so that nothing a user sent is silently dropped. Element order inside a container
//! is not enforced (S3 does not enforce it either); serialization writes the API model's order.
//!
//! Limits that keep hostile input cheap: the body size is checked before parsing (see
//! [`Variant::max_body_bytes`]) and nesting deeper than [`MAX_DEPTH`] is refused, so neither
//! building nor dropping the tree can exhaust the stack.

use std::fmt::Write as _;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use super::codec::{self, RawRule};
use super::error::ValidationError;
use super::model::{
    AccessControlTranslation, AndOperator, DeleteMarkerReplication, Destination,
    EncryptionConfiguration, EventThreshold, Exclusion, Filter, Metrics, ReplicationConfiguration,
    ReplicationTime, Rule, S3_CONTROL_NAMESPACE, S3_NAMESPACE, Selector, SourceSelectionCriteria,
    Status, Tag, Variant,
};

/// Deepest element nesting accepted; the deepest legal path is 6 levels.
pub(crate) const MAX_DEPTH: usize = 16;

/// One parsed element: local name, child elements and character data.
#[derive(Debug, Default)]
struct Element {
    name: String,
    children: Vec<Element>,
    text: String,
}

/// Parses an XML `ReplicationConfiguration`.
///
/// `variant` is the API the body was sent to; `None` takes it from the namespace (no namespace
/// means the S3 API). A namespace that contradicts `variant` is `MalformedXML`.
pub(crate) fn parse(
    body: &[u8],
    variant: Option<Variant>,
) -> Result<ReplicationConfiguration, ValidationError> {
    codec::check_size(body.len(), variant.unwrap_or(Variant::S3))?;
    let text = std::str::from_utf8(codec::strip_bom(body))
        .map_err(|e| ValidationError::malformed(format_args!("the body is not UTF-8 ({e})")))?;
    let (root, namespace) = build_tree(text)?;
    let variant = match (namespace.as_deref(), variant) {
        (None, v) => v.unwrap_or(Variant::S3),
        (Some(S3_NAMESPACE), None | Some(Variant::S3)) => Variant::S3,
        (Some(S3_CONTROL_NAMESPACE), None | Some(Variant::S3Control)) => Variant::S3Control,
        (Some(ns), Some(v)) => {
            return Err(ValidationError::malformed(format_args!(
                "namespace {ns:?} is not the {v} namespace {:?}",
                v.namespace()
            )));
        }
        (Some(ns), None) => {
            return Err(ValidationError::malformed(format_args!("unknown namespace {ns:?}")));
        }
    };
    codec::check_size(body.len(), variant)?;
    if root.name != "ReplicationConfiguration" {
        return Err(ValidationError::malformed(format_args!(
            "the root element is <{}>, expected <ReplicationConfiguration>",
            root.name
        )));
    }
    map_configuration(&root, variant)
}

/// Builds the element tree, checking that every element lives in the root's namespace.
fn build_tree(text: &str) -> Result<(Element, Option<String>), ValidationError> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut root_ns: Option<Option<String>> = None;
    loop {
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(next) => next,
            Err(e) => {
                let e = ValidationError::malformed(format_args!("not well-formed XML: {e}"));
                return Err(located(e, text, reader.error_position()));
            }
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let name = start.local_name().as_ref().to_owned();
                let ns = match resolved {
                    ResolveResult::Unbound => None,
                    ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
                    ResolveResult::Unknown(p) => {
                        return Err(located(
                            ValidationError::malformed(format_args!(
                                "namespace prefix {p:?} is not declared"
                            )),
                            text,
                            reader.buffer_position(),
                        ));
                    }
                };
                if root.is_some() {
                    return Err(located(
                        ValidationError::malformed("content after the root element"),
                        text,
                        reader.buffer_position(),
                    ));
                }
                match &root_ns {
                    None => root_ns = Some(ns),
                    Some(expected) if *expected != ns => {
                        return Err(located(
                            ValidationError::malformed(format_args!(
                                "element <{name}> is in namespace {ns:?}, not {expected:?}"
                            )),
                            text,
                            reader.buffer_position(),
                        ));
                    }
                    Some(_) => {}
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(located(
                        ValidationError::malformed("elements are nested too deeply"),
                        text,
                        reader.buffer_position(),
                    ));
                }
                stack.push(Element { name, ..Element::default() });
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root);
                }
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(t) => append_text(&mut stack, &t.xml10_content())
                .map_err(|e| located(e, text, reader.buffer_position()))?,
            Event::CData(c) => append_text(&mut stack, &c.xml10_content())
                .map_err(|e| located(e, text, reader.buffer_position()))?,
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => {
                        let Some(ch) = quick_xml::escape::resolve_predefined_entity(&r)
                            .and_then(|t| t.chars().next())
                        else {
                            let e = ValidationError::malformed(format_args!(
                                "unknown entity &{};",
                                &*r
                            ));
                            return Err(located(e, text, reader.buffer_position()));
                        };
                        ch
                    }
                    Err(e) => {
                        return Err(located(
                            ValidationError::malformed(format_args!(
                                "bad character reference: {e}"
                            )),
                            text,
                            reader.buffer_position(),
                        ));
                    }
                };
                append_text(&mut stack, ch.encode_utf8(&mut [0; 4]))
                    .map_err(|e| located(e, text, reader.buffer_position()))?;
            }
            Event::DocType(_) => {
                return Err(located(
                    ValidationError::malformed("document type declarations are not allowed"),
                    text,
                    reader.buffer_position(),
                ));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(located(
            ValidationError::malformed("the document ends inside an element"),
            text,
            reader.buffer_position(),
        ));
    }
    let root = root.ok_or_else(|| ValidationError::malformed("the body holds no element"))?;
    Ok((root, root_ns.flatten()))
}

/// `e` with where in `text` it was found (byte offset `at`): line and column, from 1.
fn located(mut e: ValidationError, text: &str, at: u64) -> ValidationError {
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    e.message = format!("{} (line {line}, column {column})", e.message);
    e
}

/// Pops the innermost open element into its parent (or makes it the root).
fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// Adds character data to the innermost open element; outside the root only whitespace.
fn append_text(stack: &mut [Element], text: &str) -> Result<(), ValidationError> {
    codec::check_xml_text(text)?;
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(ValidationError::malformed("text outside the root element")),
    }
}

/// Takes the children of one container element by name, then reports any left over.
struct Children<'a> {
    parent: &'a Element,
    used: Vec<bool>,
}

impl<'a> Children<'a> {
    fn new(parent: &'a Element) -> Result<Self, ValidationError> {
        if !parent.text.trim().is_empty() {
            return Err(ValidationError::malformed(format_args!(
                "<{}> must hold elements, not text",
                parent.name
            )));
        }
        Ok(Children { parent, used: vec![false; parent.children.len()] })
    }

    /// Every child named one of `names`, in document order.
    fn all(&mut self, names: &[&str]) -> Vec<&'a Element> {
        let mut found = Vec::new();
        for (child, used) in self.parent.children.iter().zip(self.used.iter_mut()) {
            if names.contains(&child.name.as_str()) {
                *used = true;
                found.push(child);
            }
        }
        found
    }

    /// The child named `name`, if any; more than one is `MalformedXML`.
    fn one(&mut self, name: &str) -> Result<Option<&'a Element>, ValidationError> {
        let mut found = self.all(&[name]).into_iter();
        let first = found.next();
        if found.next().is_some() {
            return Err(ValidationError::malformed(format_args!(
                "<{name}> appears more than once in <{}>",
                self.parent.name
            )));
        }
        Ok(first)
    }

    fn required(&mut self, name: &str) -> Result<&'a Element, ValidationError> {
        self.one(name)?.ok_or_else(|| {
            ValidationError::malformed(format_args!(
                "<{}> is missing its required <{name}>",
                self.parent.name
            ))
        })
    }

    /// The text of the leaf child named `name`, if any.
    fn leaf(&mut self, name: &str) -> Result<Option<&'a str>, ValidationError> {
        self.one(name)?.map(leaf_text).transpose()
    }

    fn required_leaf(&mut self, name: &str) -> Result<&'a str, ValidationError> {
        leaf_text(self.required(name)?)
    }

    /// Fails on the first child nobody asked for.
    fn finish(self) -> Result<(), ValidationError> {
        match self.parent.children.iter().zip(&self.used).find(|(_, used)| !**used) {
            Some((child, _)) => Err(ValidationError::malformed(format_args!(
                "unknown element <{}> in <{}>",
                child.name, self.parent.name
            ))),
            None => Ok(()),
        }
    }
}

fn leaf_text(e: &Element) -> Result<&str, ValidationError> {
    match e.children.first() {
        Some(child) => Err(ValidationError::malformed(format_args!(
            "<{}> must hold text, not <{}>",
            e.name, child.name
        ))),
        None => Ok(&e.text),
    }
}

fn map_configuration(
    root: &Element,
    variant: Variant,
) -> Result<ReplicationConfiguration, ValidationError> {
    let mut c = Children::new(root)?;
    let role = c.required_leaf("Role")?.to_owned();
    let rule_elements = match variant {
        Variant::S3 => c.all(&["Rule"]),
        Variant::S3Control => {
            let rules = c.required("Rules")?;
            let mut rc = Children::new(rules)?;
            let found = rc.all(&["Rule"]);
            rc.finish()?;
            found
        }
    };
    c.finish()?;
    let raw =
        rule_elements.into_iter().map(|e| map_rule(e, variant)).collect::<Result<Vec<_>, _>>()?;
    codec::assemble(variant, role, raw)
}

fn map_rule(e: &Element, variant: Variant) -> Result<RawRule, ValidationError> {
    let mut c = Children::new(e)?;
    let id = c.leaf("ID")?.map(str::to_owned);
    let priority = c.leaf("Priority")?.map(|p| codec::parse_int("Priority", p)).transpose()?;
    let prefix = c.leaf("Prefix")?.map(str::to_owned);
    let filter = c.one("Filter")?.map(|f| map_filter(f, variant)).transpose()?;
    let status = codec::parse_status("Rule/Status", c.required_leaf("Status")?)?;
    let source_selection_criteria =
        c.one("SourceSelectionCriteria")?.map(map_source_selection).transpose()?;
    let existing_object_replication =
        c.one("ExistingObjectReplication")?.map(|s| status_container(s, true)).transpose()?;
    let existing_object_replication = existing_object_replication.flatten();
    let delete_marker_replication = c
        .one("DeleteMarkerReplication")?
        .map(|d| status_container(d, false).map(|status| DeleteMarkerReplication { status }))
        .transpose()?;
    let destination = map_destination(c.required("Destination")?, variant)?;
    let bucket = match variant {
        Variant::S3 => None,
        Variant::S3Control => Some(c.required_leaf("Bucket")?.to_owned()),
    };
    c.finish()?;
    let selector = codec::selector(prefix, filter)?;
    Ok(RawRule {
        id,
        rule: Rule {
            id: String::new(),
            priority,
            selector,
            status,
            source_selection_criteria,
            existing_object_replication,
            delete_marker_replication,
            destination,
            bucket,
        },
    })
}

/// A container whose only child is `Status`; `required` says whether it may be absent.
fn status_container(e: &Element, required: bool) -> Result<Option<Status>, ValidationError> {
    let mut c = Children::new(e)?;
    let status = if required { Some(c.required_leaf("Status")?) } else { c.leaf("Status")? };
    c.finish()?;
    status.map(|s| codec::parse_status(&format!("{}/Status", e.name), s)).transpose()
}

fn map_filter(e: &Element, variant: Variant) -> Result<Filter, ValidationError> {
    let mut c = Children::new(e)?;
    let prefix = c.leaf("Prefix")?.map(str::to_owned);
    let tag = c.one("Tag")?.map(map_tag).transpose()?;
    let and = c.one("And")?.map(|a| map_and(a, variant)).transpose()?;
    let not = map_not(&mut c, variant)?;
    c.finish()?;
    codec::filter(prefix, tag, and, not)
}

/// The `Not` child of a `Filter` or `And`, if any (S3 API only).
fn map_not(
    parent: &mut Children<'_>,
    variant: Variant,
) -> Result<Option<Exclusion>, ValidationError> {
    let Some(e) = parent.one("Not")? else { return Ok(None) };
    codec::s3_only(variant, "Not")?;
    let mut c = Children::new(e)?;
    let prefix = c.leaf("Prefix")?.map(str::to_owned);
    let tag = c.one("Tag")?.map(map_tag).transpose()?;
    let or = c
        .one("Or")?
        .map(|o| {
            let mut oc = Children::new(o)?;
            let prefixes = oc
                .all(&["Prefix"])
                .into_iter()
                .map(|p| leaf_text(p).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            let tags = oc.all(&["Tag"]).into_iter().map(map_tag).collect::<Result<Vec<_>, _>>()?;
            oc.finish()?;
            codec::or(prefixes, tags)
        })
        .transpose()?;
    c.finish()?;
    codec::not(prefix, tag, or).map(Some)
}

fn map_tag(e: &Element) -> Result<Tag, ValidationError> {
    let mut c = Children::new(e)?;
    let key = c.required_leaf("Key")?.to_owned();
    let value = c.required_leaf("Value")?.to_owned();
    c.finish()?;
    Ok(Tag { key, value })
}

fn map_and(e: &Element, variant: Variant) -> Result<AndOperator, ValidationError> {
    let mut c = Children::new(e)?;
    let prefix = c.leaf("Prefix")?.map(str::to_owned);
    let tags = match variant {
        Variant::S3 => c.all(&["Tag"]).into_iter().map(map_tag).collect::<Result<Vec<_>, _>>()?,
        Variant::S3Control => match c.one("Tags")? {
            None => Vec::new(),
            Some(list) => {
                // The API reference names the items `S3Tag`; generic rest-xml serializers
                // (botocore) write `member`. Both are accepted.
                let mut lc = Children::new(list)?;
                let tags = lc.all(&["S3Tag", "member"]).into_iter().map(map_tag).collect::<Result<
                    Vec<_>,
                    _,
                >>(
                )?;
                lc.finish()?;
                tags
            }
        },
    };
    let not = map_not(&mut c, variant)?;
    c.finish()?;
    codec::and(prefix, tags, not)
}

fn map_source_selection(e: &Element) -> Result<SourceSelectionCriteria, ValidationError> {
    let mut c = Children::new(e)?;
    let sse_kms_encrypted_objects =
        c.one("SseKmsEncryptedObjects")?.map(|s| status_container(s, true)).transpose()?.flatten();
    let replica_modifications =
        c.one("ReplicaModifications")?.map(|s| status_container(s, true)).transpose()?.flatten();
    c.finish()?;
    Ok(SourceSelectionCriteria { sse_kms_encrypted_objects, replica_modifications })
}

fn map_destination(e: &Element, variant: Variant) -> Result<Destination, ValidationError> {
    let mut c = Children::new(e)?;
    let bucket = c.required_leaf("Bucket")?.to_owned();
    let account = c.leaf("Account")?.map(str::to_owned);
    let storage_class = c.leaf("StorageClass")?.map(codec::parse_storage_class).transpose()?;
    let access_control_translation = c
        .one("AccessControlTranslation")?
        .map(|a| {
            let mut ac = Children::new(a)?;
            let owner = codec::parse_owner(ac.required_leaf("Owner")?)?;
            ac.finish()?;
            Ok::<_, ValidationError>(AccessControlTranslation { owner })
        })
        .transpose()?;
    let encryption_configuration = c
        .one("EncryptionConfiguration")?
        .map(|a| {
            let mut ec = Children::new(a)?;
            let replica_kms_key_id = ec.leaf("ReplicaKmsKeyID")?.map(str::to_owned);
            let use_source_multi_region_key = match ec.one("UseSourceMultiRegionKey")? {
                Some(u) => {
                    codec::s3_only(variant, "UseSourceMultiRegionKey")?;
                    status_container(u, true)?
                }
                None => None,
            };
            ec.finish()?;
            Ok::<_, ValidationError>(EncryptionConfiguration {
                replica_kms_key_id,
                use_source_multi_region_key,
            })
        })
        .transpose()?;
    let replication_time = c
        .one("ReplicationTime")?
        .map(|rt| {
            let mut rc = Children::new(rt)?;
            let status =
                codec::parse_status("ReplicationTime/Status", rc.required_leaf("Status")?)?;
            let minutes = minutes(rc.required("Time")?)?;
            rc.finish()?;
            Ok::<_, ValidationError>(ReplicationTime { status, minutes })
        })
        .transpose()?;
    let metrics = c
        .one("Metrics")?
        .map(|m| {
            let mut mc = Children::new(m)?;
            let status = codec::parse_status("Metrics/Status", mc.required_leaf("Status")?)?;
            let event_threshold = mc
                .one("EventThreshold")?
                .map(|t| minutes(t).map(|minutes| EventThreshold { minutes }))
                .transpose()?;
            mc.finish()?;
            Ok::<_, ValidationError>(Metrics { status, event_threshold })
        })
        .transpose()?;
    c.finish()?;
    Ok(Destination {
        bucket,
        account,
        storage_class,
        access_control_translation,
        encryption_configuration,
        replication_time,
        metrics,
    })
}

/// A `Time` or `EventThreshold` element: an optional `Minutes` integer.
fn minutes(e: &Element) -> Result<Option<i32>, ValidationError> {
    let mut c = Children::new(e)?;
    let m = c.leaf("Minutes")?.map(|m| codec::parse_int("Minutes", m)).transpose()?;
    c.finish()?;
    Ok(m)
}

/// Serializes a configuration as XML in its variant's namespace, in the API model's order.
pub(crate) fn write(config: &ReplicationConfiguration) -> String {
    let mut w = Writer { out: String::new(), depth: 0 };
    w.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(w.out, "<ReplicationConfiguration xmlns=\"{}\">", config.variant.namespace());
    w.depth = 1;
    w.leaf("Role", &config.role);
    if config.variant == Variant::S3Control {
        w.open("Rules");
    }
    for rule in &config.rules {
        write_rule(&mut w, rule, config.variant);
    }
    if config.variant == Variant::S3Control {
        w.close("Rules");
    }
    w.out.push_str("</ReplicationConfiguration>\n");
    w.out
}

fn write_rule(w: &mut Writer, rule: &Rule, variant: Variant) {
    w.open("Rule");
    w.leaf("ID", &rule.id);
    if let Some(p) = rule.priority {
        w.leaf("Priority", &p.to_string());
    }
    match &rule.selector {
        Selector::Prefix(p) => w.leaf("Prefix", p),
        Selector::Filter(f) => write_filter(w, f, variant),
    }
    w.leaf("Status", rule.status.as_str());
    if let Some(ssc) = &rule.source_selection_criteria {
        w.open("SourceSelectionCriteria");
        if let Some(s) = ssc.sse_kms_encrypted_objects {
            w.status_container("SseKmsEncryptedObjects", Some(s));
        }
        if let Some(s) = ssc.replica_modifications {
            w.status_container("ReplicaModifications", Some(s));
        }
        w.close("SourceSelectionCriteria");
    }
    if let Some(s) = rule.existing_object_replication {
        w.status_container("ExistingObjectReplication", Some(s));
    }
    write_destination(w, &rule.destination);
    if let Some(d) = &rule.delete_marker_replication {
        w.status_container("DeleteMarkerReplication", d.status);
    }
    if let Some(b) = &rule.bucket {
        w.leaf("Bucket", b);
    }
    w.close("Rule");
}

fn write_filter(w: &mut Writer, filter: &Filter, variant: Variant) {
    if *filter == Filter::Empty {
        w.empty("Filter");
        return;
    }
    w.open("Filter");
    match filter {
        Filter::Empty => {}
        Filter::Prefix(p) => w.leaf("Prefix", p),
        Filter::Tag(t) => write_tag(w, "Tag", t),
        Filter::And(a) => {
            w.open("And");
            if let Some(p) = &a.prefix {
                w.leaf("Prefix", p);
            }
            match variant {
                Variant::S3 => a.tags.iter().for_each(|t| write_tag(w, "Tag", t)),
                Variant::S3Control if a.tags.is_empty() => {}
                Variant::S3Control => {
                    w.open("Tags");
                    a.tags.iter().for_each(|t| write_tag(w, "S3Tag", t));
                    w.close("Tags");
                }
            }
            if let Some(n) = &a.not {
                write_not(w, n);
            }
            w.close("And");
        }
        Filter::Not(n) => write_not(w, n),
    }
    w.close("Filter");
}

fn write_not(w: &mut Writer, not: &Exclusion) {
    w.open("Not");
    match not {
        Exclusion::Prefix(p) => w.leaf("Prefix", p),
        Exclusion::Tag(t) => write_tag(w, "Tag", t),
        Exclusion::Or(o) => {
            w.open("Or");
            o.prefixes.iter().for_each(|p| w.leaf("Prefix", p));
            o.tags.iter().for_each(|t| write_tag(w, "Tag", t));
            w.close("Or");
        }
    }
    w.close("Not");
}

fn write_tag(w: &mut Writer, name: &str, tag: &Tag) {
    w.open(name);
    w.leaf("Key", &tag.key);
    w.leaf("Value", &tag.value);
    w.close(name);
}

fn write_destination(w: &mut Writer, d: &Destination) {
    w.open("Destination");
    w.leaf("Bucket", &d.bucket);
    if let Some(a) = &d.account {
        w.leaf("Account", a);
    }
    if let Some(sc) = d.storage_class {
        w.leaf("StorageClass", sc.as_str());
    }
    if let Some(act) = d.access_control_translation {
        w.open("AccessControlTranslation");
        w.leaf("Owner", act.owner.as_str());
        w.close("AccessControlTranslation");
    }
    if let Some(ec) = &d.encryption_configuration {
        if ec.replica_kms_key_id.is_none() && ec.use_source_multi_region_key.is_none() {
            w.empty("EncryptionConfiguration");
        } else {
            w.open("EncryptionConfiguration");
            if let Some(k) = &ec.replica_kms_key_id {
                w.leaf("ReplicaKmsKeyID", k);
            }
            if let Some(s) = ec.use_source_multi_region_key {
                w.status_container("UseSourceMultiRegionKey", Some(s));
            }
            w.close("EncryptionConfiguration");
        }
    }
    if let Some(rt) = d.replication_time {
        w.open("ReplicationTime");
        w.leaf("Status", rt.status.as_str());
        w.minutes("Time", rt.minutes);
        w.close("ReplicationTime");
    }
    if let Some(m) = d.metrics {
        w.open("Metrics");
        w.leaf("Status", m.status.as_str());
        if let Some(t) = m.event_threshold {
            w.minutes("EventThreshold", t.minutes);
        }
        w.close("Metrics");
    }
    w.close("Destination");
}

/// An indenting writer; indentation goes only between elements, never inside values.
struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}>");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
    }

    fn empty(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}/>");
    }

    fn leaf(&mut self, name: &str, value: &str) {
        self.indent();
        let _ = write!(self.out, "<{name}>");
        escape_into(&mut self.out, value);
        let _ = writeln!(self.out, "</{name}>");
    }

    fn status_container(&mut self, name: &str, status: Option<Status>) {
        match status {
            Some(s) => {
                self.open(name);
                self.leaf("Status", s.as_str());
                self.close(name);
            }
            None => self.empty(name),
        }
    }

    fn minutes(&mut self, name: &str, minutes: Option<i32>) {
        match minutes {
            Some(m) => {
                self.open(name);
                self.leaf("Minutes", &m.to_string());
                self.close(name);
            }
            None => self.empty(name),
        }
    }
}

/// Escapes markup characters, and writes control characters (including CR, which XML line-end
/// normalization would otherwise turn into LF) as character references, so values round-trip.
fn escape_into(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(ch),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod location_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn syntax_errors_say_where() {
        let body = "<ReplicationConfiguration>\n  <Role>r</Role>\n  <Rule><ID>a</Rule>\n</ReplicationConfiguration>";
        let e = parse(body.as_bytes(), None).unwrap_err();
        assert_eq!(e.code, crate::config::S3ErrorCode::MalformedXml);
        assert!(e.message.contains("(line 3, column"), "{e}");
        let e = parse(b"<ReplicationConfiguration>\n<Role>&nope;</Role>", None).unwrap_err();
        assert!(e.message.contains("unknown entity") && e.message.contains("line 2"), "{e}");
    }
}
