//! The configuration conformance table: every validation rule with an accept and a reject
//! case, both API variants, V1 and V2, XML and JSON, and the seed examples.
//!
//! Each case is a document, an optional bucket context and the expected outcome (valid, or
//! S3's error code plus the rule it names). Expected codes come from
//! `shared/reference/s3-replication-semantics.md` §3; `docs/s3-compatibility.md` lists the ones
//! that are our reading of undocumented behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::struct_excessive_bools, clippy::too_many_lines)]

use S3ErrorCode::{
    InvalidArgument, InvalidRequest, InvalidStorageClass, InvalidTag, MalformedXml,
    MaxMessageLengthExceeded,
};
use s3repl::config::{BucketContext, ReplicationConfiguration, S3ErrorCode, Variant};

const ROLE: &str = "arn:aws:iam::123456789012:role/replication";
const DST: &str = "arn:aws:s3:::dst-bucket";
const OP_DST: &str =
    "arn:aws:s3-outposts:us-east-1:123456789012:outpost/op-01ac5d28a6a232904/accesspoint/dst-ap";
const OP_SRC: &str =
    "arn:aws:s3-outposts:us-east-1:123456789012:outpost/op-01ac5d28a6a232904/accesspoint/src-ap";
const KMS: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A rule under construction; defaults make a valid V2 rule.
#[derive(Clone)]
struct R {
    id: String,
    prio: Option<String>,
    sel: String,
    status: String,
    ssc: String,
    eor: String,
    bucket: String,
    dest: String,
    dmr: Option<String>,
    extra: String,
}

fn r2(id: &str, prio: i64) -> R {
    R {
        id: id.into(),
        prio: Some(prio.to_string()),
        sel: "<Filter/>".into(),
        status: "Enabled".into(),
        ssc: String::new(),
        eor: String::new(),
        bucket: DST.into(),
        dest: String::new(),
        dmr: Some("<Status>Disabled</Status>".into()),
        extra: String::new(),
    }
}

fn r1(id: &str, prefix: &str) -> R {
    R { prio: None, sel: format!("<Prefix>{prefix}</Prefix>"), dmr: None, ..r2(id, 0) }
}

/// A valid S3-on-Outposts rule.
fn ro(id: &str, prio: i64) -> R {
    R {
        bucket: OP_DST.into(),
        dest: "<StorageClass>OUTPOSTS</StorageClass>".into(),
        extra: format!("<Bucket>{OP_SRC}</Bucket>"),
        ..r2(id, prio)
    }
}

impl R {
    fn filter(mut self, inner: &str) -> Self {
        self.sel = format!("<Filter>{inner}</Filter>");
        self
    }
    fn sel(mut self, raw: &str) -> Self {
        self.sel = raw.into();
        self
    }
    fn no_prio(mut self) -> Self {
        self.prio = None;
        self
    }
    fn prio_raw(mut self, p: &str) -> Self {
        self.prio = Some(p.into());
        self
    }
    fn status(mut self, s: &str) -> Self {
        self.status = s.into();
        self
    }
    fn dmr(mut self, inner: Option<&str>) -> Self {
        self.dmr = inner.map(Into::into);
        self
    }
    fn dmr_enabled(self) -> Self {
        self.dmr(Some("<Status>Enabled</Status>"))
    }
    fn ssc(mut self, inner: &str) -> Self {
        self.ssc = format!("<SourceSelectionCriteria>{inner}</SourceSelectionCriteria>");
        self
    }
    fn eor(mut self, status: &str) -> Self {
        self.eor = format!(
            "<ExistingObjectReplication><Status>{status}</Status></ExistingObjectReplication>"
        );
        self
    }
    fn bucket(mut self, b: &str) -> Self {
        self.bucket = b.into();
        self
    }
    fn dest(mut self, inner: &str) -> Self {
        self.dest = inner.into();
        self
    }
    fn extra(mut self, raw: &str) -> Self {
        self.extra = raw.into();
        self
    }
    fn xml(&self) -> String {
        let prio =
            self.prio.as_ref().map(|p| format!("<Priority>{p}</Priority>")).unwrap_or_default();
        let dmr = self
            .dmr
            .as_ref()
            .map(|d| format!("<DeleteMarkerReplication>{d}</DeleteMarkerReplication>"))
            .unwrap_or_default();
        let status = if self.status.is_empty() {
            String::new()
        } else {
            format!("<Status>{}</Status>", self.status)
        };
        format!(
            "<Rule><ID>{}</ID>{prio}{}{status}{}{}<Destination><Bucket>{}</Bucket>{}</Destination>{dmr}{}</Rule>",
            self.id, self.sel, self.ssc, self.eor, self.bucket, self.dest, self.extra
        )
    }
}

fn s3(rules: &[R]) -> String {
    let body: String = rules.iter().map(R::xml).collect();
    format!(
        "<ReplicationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Role>{ROLE}</Role>{body}</ReplicationConfiguration>"
    )
}

fn ctl(rules: &[R]) -> String {
    let body: String = rules.iter().map(R::xml).collect();
    format!(
        "<ReplicationConfiguration xmlns=\"http://awss3control.amazonaws.com/doc/2018-08-20/\"><Role>{ROLE}</Role><Rules>{body}</Rules></ReplicationConfiguration>"
    )
}

fn one(rule: R) -> String {
    s3(&[rule])
}

fn dest_tag(key: &str, value: &str) -> String {
    format!("<Tag><Key>{key}</Key><Value>{value}</Value></Tag>")
}

const RTC_OK: &str = "<ReplicationTime><Status>Enabled</Status><Time><Minutes>15</Minutes></Time></ReplicationTime><Metrics><Status>Enabled</Status><EventThreshold><Minutes>15</Minutes></EventThreshold></Metrics>";

const CTX_OK: &str = r#"{"account":"123456789012","source":{"bucket":"src-bucket","versioning":"Enabled"},"buckets":{"dst-bucket":{"versioning":"Enabled"},"dst-2":{"versioning":"Enabled"}}}"#;

struct Case {
    name: String,
    variant: Option<Variant>,
    body: String,
    ctx: Option<&'static str>,
    expect: Result<(), (S3ErrorCode, Option<&'static str>)>,
}

#[derive(Default)]
struct Table(Vec<Case>);

impl Table {
    fn ok(&mut self, name: &str, body: impl Into<String>) {
        self.push(name, None, body.into(), None, Ok(()));
    }
    fn bad(
        &mut self,
        name: &str,
        body: impl Into<String>,
        code: S3ErrorCode,
        rule: Option<&'static str>,
    ) {
        self.push(name, None, body.into(), None, Err((code, rule)));
    }
    fn push(
        &mut self,
        name: &str,
        variant: Option<Variant>,
        body: String,
        ctx: Option<&'static str>,
        expect: Result<(), (S3ErrorCode, Option<&'static str>)>,
    ) {
        self.0.push(Case { name: name.into(), variant, body, ctx, expect });
    }
}

fn run(case: &Case) -> Result<(), (S3ErrorCode, Option<String>)> {
    let ctx: BucketContext = case.ctx.map(|c| serde_json::from_str(c).unwrap()).unwrap_or_default();
    let config = ReplicationConfiguration::parse(case.body.as_bytes(), case.variant)
        .map_err(|e| (e.code, e.rule_id))?;
    config.validate(&ctx).map_err(|e| (e.code, e.rule_id))
}

fn shape_cases(t: &mut Table) {
    t.ok("seed: CLI JSON example", include_str!("../../examples/replication.json"));
    t.ok("seed: full S3 XML example", include_str!("../../examples/replication.xml"));
    t.ok("seed: V1 XML example", include_str!("../../examples/replication-v1.xml"));
    t.bad("not XML at all", "hello", MalformedXml, None);
    t.bad("unclosed element", "<ReplicationConfiguration><Role>x</Role>", MalformedXml, None);
    t.bad(
        "wrong root element",
        "<LifecycleConfiguration><Rule/></LifecycleConfiguration>",
        MalformedXml,
        None,
    );
    t.bad("unknown element in Rule", one(r2("a", 1).extra("<Foo>1</Foo>")), MalformedXml, None);
    t.bad(
        "unknown element in Destination",
        one(r2("a", 1).dest("<Region>us-east-1</Region>")),
        MalformedXml,
        None,
    );
    t.bad(
        "missing Role",
        format!("<ReplicationConfiguration>{}</ReplicationConfiguration>", r2("a", 1).xml()),
        MalformedXml,
        None,
    );
    t.bad(
        "duplicate Role",
        s3(&[r2("a", 1)]).replace("</Role>", "</Role><Role>x</Role>"),
        MalformedXml,
        None,
    );
    t.bad("no rules", s3(&[]), MalformedXml, None);
    t.bad("missing Status", one(r2("a", 1).status("")), MalformedXml, None);
    t.bad("Status is case-sensitive", one(r2("a", 1).status("enabled")), MalformedXml, None);
    t.bad(
        "missing Destination",
        one(r2("a", 1)).replace(&format!("<Destination><Bucket>{DST}</Bucket></Destination>"), ""),
        MalformedXml,
        None,
    );
    t.bad(
        "missing Destination/Bucket",
        one(r2("a", 1)).replace(&format!("<Bucket>{DST}</Bucket>"), ""),
        MalformedXml,
        None,
    );
    t.bad("non-integer Priority", one(r2("a", 1).prio_raw("one")), MalformedXml, None);
    t.bad("Priority beyond xs:int", one(r2("a", 1).prio_raw("2147483648")), MalformedXml, None);
    t.bad(
        "Filter with Prefix and Tag",
        one(r2("a", 1).filter(&format!("<Prefix>a</Prefix>{}", dest_tag("k", "v")))),
        MalformedXml,
        None,
    );
    t.bad("rule with neither Prefix nor Filter", one(r2("a", 1).sel("")), MalformedXml, None);
    t.bad(
        "rule with both Prefix and Filter",
        one(r2("a", 1).sel("<Prefix>a</Prefix><Filter/>")),
        MalformedXml,
        None,
    );
    t.bad(
        "StorageClass outside the enum",
        one(r2("a", 1).dest("<StorageClass>FROZEN</StorageClass>")),
        MalformedXml,
        None,
    );
    t.bad(
        "Owner other than Destination",
        one(r2("a", 1).dest(
            "<Account>123456789012</Account><AccessControlTranslation><Owner>Source</Owner></AccessControlTranslation>",
        )),
        MalformedXml,
        None,
    );
    t.bad(
        "DeleteMarkerReplication status outside the enum",
        one(r2("a", 1).dmr(Some("<Status>On</Status>"))),
        MalformedXml,
        None,
    );
    t.bad("empty And", one(r2("a", 1).filter("<And></And>")), MalformedXml, None);
    t.bad(
        "Tag without Value",
        one(r2("a", 1).filter("<Tag><Key>k</Key></Tag>")),
        MalformedXml,
        None,
    );
    t.bad(
        "non-integer Minutes",
        one(r2("a", 1).dest(&RTC_OK.replacen(
            "<Minutes>15</Minutes>",
            "<Minutes>fifteen</Minutes>",
            1,
        ))),
        MalformedXml,
        None,
    );
    t.bad(
        "text inside a container",
        one(r2("a", 1)).replace("<Rule>", "<Rule>junk"),
        MalformedXml,
        None,
    );
    t.bad("content after the root", one(r2("a", 1)) + "<More/>", MalformedXml, None);
    t.bad(
        "DOCTYPE refused",
        format!("<!DOCTYPE x [<!ENTITY e \"v\">]>{}", one(r2("a", 1))),
        MalformedXml,
        None,
    );
    t.bad(
        "unknown namespace",
        one(r2("a", 1)).replace("http://s3.amazonaws.com/doc/2006-03-01/", "urn:other"),
        MalformedXml,
        None,
    );
    t.bad(
        "rule Bucket is s3control-only",
        one(r2("a", 1).extra(&format!("<Bucket>{OP_SRC}</Bucket>"))),
        MalformedXml,
        None,
    );
    t.push(
        "S3 Control namespace sent to the S3 API",
        Some(Variant::S3),
        ctl(&[ro("a", 1)]),
        None,
        Err((MalformedXml, None)),
    );
    t.ok(
        "no namespace",
        one(r2("a", 1)).replace(" xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"", ""),
    );
    t.ok(
        "prefixed namespace",
        one(r2("a", 1))
            .replace('<', "<s3:")
            .replace("<s3:/", "</s3:")
            .replace(" xmlns=", " xmlns:s3="),
    );
    t.ok(
        "XML declaration, comments, CDATA",
        format!(
            "<?xml version=\"1.0\"?><!-- c -->{}",
            one(r2("a", 1).filter("<Prefix><![CDATA[a&b/]]></Prefix>"))
        ),
    );
    t.bad(
        "body over 2 MiB",
        one(r2("a", 1).filter(&format!("<Prefix>{}</Prefix>", " ".repeat(2 * 1024 * 1024)))),
        MaxMessageLengthExceeded,
        None,
    );
    t.bad(
        "NUL in text (found by fuzzing)",
        one(r2("a", 1).filter("<Prefix>a\0b</Prefix>")),
        MalformedXml,
        None,
    );
    t.bad(
        "control character as a character reference",
        one(r2("a", 1).filter("<Prefix>a&#x1;b</Prefix>")),
        MalformedXml,
        None,
    );
    t.ok(
        "CR, tab and astral characters",
        one(r2("a", 1).filter("<Prefix>a&#xD;\tb\u{1F600}</Prefix>")),
    );
    t.bad(
        "JSON: a value XML cannot carry",
        format!(r#"{{"Role":"{ROLE}","Rules":[{{"Status":"Enabled","Priority":1,"Filter":{{"Prefix":"a\u0001"}},"DeleteMarkerReplication":{{"Status":"Disabled"}},"Destination":{{"Bucket":"{DST}"}}}}]}}"#),
        MalformedXml,
        None,
    );
    t.ok("empty Filter", one(r2("a", 1).filter("")));
    t.ok(
        "And with a single tag",
        one(r2("a", 1).filter(&format!("<And>{}</And>", dest_tag("k", "v")))),
    );
    t.ok("missing ID is generated", one(r2("a", 1)).replace("<ID>a</ID>", ""));
}

fn schema_cases(t: &mut Table) {
    t.bad(
        "V2 without DeleteMarkerReplication",
        one(r2("a", 1).dmr(None)),
        InvalidRequest,
        Some("a"),
    );
    t.bad("V2 without Priority", one(r2("a", 1).no_prio()), InvalidRequest, Some("a"));
    t.ok("V2 with Priority 0", one(r2("a", 0)));
    t.bad("negative Priority", one(r2("a", -1)), InvalidRequest, Some("a"));
    t.bad("V1 with Priority", one(r1("a", "x/").prio_raw("1")), InvalidRequest, Some("a"));
    t.bad(
        "V1 with DeleteMarkerReplication",
        one(r1("a", "x/").dmr_enabled()),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "V1 with ReplicaModifications",
        one(r1("a", "x/")
            .ssc("<ReplicaModifications><Status>Enabled</Status></ReplicaModifications>")),
        InvalidRequest,
        Some("a"),
    );
    t.bad("V1 with ReplicationTime", one(r1("a", "x/").dest(RTC_OK)), InvalidRequest, Some("a"));
    t.bad(
        "V1 with ExistingObjectReplication",
        one(r1("a", "x/").eor("Enabled")),
        InvalidRequest,
        Some("a"),
    );
    t.bad("V1 and V2 rules mixed", s3(&[r2("a", 1), r1("b", "x/")]), InvalidRequest, Some("b"));
    t.ok("V1 disjoint prefixes, one destination", s3(&[r1("a", "x/"), r1("b", "y/")]));
    t.ok("V1 with SSE-KMS selection", one(r1("a", "x/").ssc("<SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects>").dest(&format!("<EncryptionConfiguration><ReplicaKmsKeyID>{KMS}</ReplicaKmsKeyID></EncryptionConfiguration>"))));
    t.bad(
        "V1 overlapping prefixes",
        s3(&[r1("a", "x/"), r1("b", "x/y")]),
        InvalidRequest,
        Some("b"),
    );
    t.bad(
        "V1 empty prefix overlaps everything",
        s3(&[r1("a", "x/"), r1("b", "")]),
        InvalidRequest,
        Some("b"),
    );
    t.bad(
        "V1 rules to different destinations",
        s3(&[r1("a", "x/"), r1("b", "y/").bucket("arn:aws:s3:::dst-2")]),
        InvalidRequest,
        Some("b"),
    );
    t.ok(
        "V2 overlapping filters",
        s3(&[r2("a", 1).filter("<Prefix>x/</Prefix>"), r2("b", 2).filter("<Prefix>x/y</Prefix>")]),
    );
    t.ok("V2 several destinations", s3(&[r2("a", 1), r2("b", 2).bucket("arn:aws:s3:::dst-2")]));
    t.bad("duplicate Priority", s3(&[r2("a", 1), r2("b", 1)]), InvalidRequest, Some("b"));
    t.bad("duplicate ID", s3(&[r2("a", 1), r2("a", 2)]), InvalidRequest, Some("a"));
    t.ok("ID of 255 characters", one(r2(&"i".repeat(255), 1)));
    let long_id: &'static str = Box::leak("i".repeat(256).into_boxed_str());
    t.bad("ID of 256 characters", one(r2(long_id, 1)), InvalidArgument, Some(long_id));
    t.ok(
        "Filter prefix of 1024 bytes",
        one(r2("a", 1).filter(&format!("<Prefix>{}</Prefix>", "p".repeat(1024)))),
    );
    t.bad(
        "Filter prefix of 1025 bytes",
        one(r2("a", 1).filter(&format!("<Prefix>{}</Prefix>", "p".repeat(1025)))),
        InvalidArgument,
        Some("a"),
    );
    t.bad("V1 prefix of 1025 bytes", one(r1("a", &"p".repeat(1025))), InvalidArgument, Some("a"));
    t.bad(
        "And prefix of 1025 bytes",
        one(r2("a", 1).filter(&format!(
            "<And><Prefix>{}</Prefix>{}</And>",
            "p".repeat(1025),
            dest_tag("k", "v")
        ))),
        InvalidArgument,
        Some("a"),
    );
    let many = |n: usize| {
        (0..n).map(|i| r2(&format!("r{i}"), i64::try_from(i).unwrap())).collect::<Vec<_>>()
    };
    t.ok("1,000 rules", s3(&many(1000)));
    t.bad("1,001 rules", s3(&many(1001)), InvalidRequest, None);
    t.ok("ExistingObjectReplication in V2", one(r2("a", 1).eor("Enabled")));
    t.ok("Disabled rule", one(r2("a", 1).status("Disabled")));
}

fn tag_cases(t: &mut Table) {
    let tag = |k: &str, v: &str| one(r2("a", 1).filter(&dest_tag(k, v)));
    t.ok("tag key of 128 characters", tag(&"k".repeat(128), "v"));
    t.bad("tag key of 129 characters", tag(&"k".repeat(129), "v"), InvalidTag, Some("a"));
    t.ok("tag value of 256 characters", tag("k", &"v".repeat(256)));
    t.bad("tag value of 257 characters", tag("k", &"v".repeat(257)), InvalidTag, Some("a"));
    t.bad("empty tag key", tag("", "v"), InvalidTag, Some("a"));
    t.ok("empty tag value", tag("k", ""));
    t.bad("tag key with a forbidden character", tag("a*b", "v"), InvalidTag, Some("a"));
    t.bad("tag value with a forbidden character", tag("k", "v?"), InvalidTag, Some("a"));
    t.ok("tag with letters of any script, spaces and symbols", tag("Größe ключ_.:/=+-@", "値 1"));
    t.bad(
        "duplicate tag keys in And",
        one(r2("a", 1).filter(&format!("<And>{}{}</And>", dest_tag("k", "1"), dest_tag("k", "2")))),
        InvalidRequest,
        Some("a"),
    );
    t.ok(
        "several tags in And",
        one(r2("a", 1).filter(&format!(
            "<And><Prefix>p</Prefix>{}{}</And>",
            dest_tag("k", "1"),
            dest_tag("j", "2")
        ))),
    );
    t.bad(
        "delete marker replication with a Tag filter",
        one(r2("a", 1).filter(&dest_tag("k", "v")).dmr_enabled()),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "delete marker replication with tags in And",
        one(r2("a", 1)
            .filter(&format!("<And><Prefix>p</Prefix>{}</And>", dest_tag("k", "v")))
            .dmr_enabled()),
        InvalidRequest,
        Some("a"),
    );
    t.ok(
        "delete marker replication with a prefix-only And",
        one(r2("a", 1).filter("<And><Prefix>p</Prefix></And>").dmr_enabled()),
    );
    t.ok("tag filter with delete markers disabled", tag("k", "v"));
}

fn destination_cases(t: &mut Table) {
    t.ok("RTC and metrics at 15 minutes", one(r2("a", 1).dest(RTC_OK)));
    t.bad(
        "RTC without Metrics",
        one(r2("a", 1).dest("<ReplicationTime><Status>Enabled</Status><Time><Minutes>15</Minutes></Time></ReplicationTime>")),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "EventThreshold without RTC",
        one(r2("a", 1).dest("<Metrics><Status>Enabled</Status><EventThreshold><Minutes>15</Minutes></EventThreshold></Metrics>")),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "EventThreshold with RTC Disabled",
        one(r2("a", 1).dest(&RTC_OK.replacen("Enabled", "Disabled", 1))),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "RTC minutes other than 15",
        one(r2("a", 1).dest(&RTC_OK.replacen("<Minutes>15</Minutes>", "<Minutes>10</Minutes>", 1))),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "event threshold other than 15",
        one(r2("a", 1).dest(&RTC_OK.replace(
            "<EventThreshold><Minutes>15</Minutes>",
            "<EventThreshold><Minutes>20</Minutes>",
        ))),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "RTC Enabled without an event threshold",
        one(r2("a", 1)
            .dest(&RTC_OK.replace("<EventThreshold><Minutes>15</Minutes></EventThreshold>", ""))),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "RTC Enabled with Metrics Disabled",
        one(r2("a", 1)
            .dest(&RTC_OK.replace("<Metrics><Status>Enabled", "<Metrics><Status>Disabled"))),
        InvalidRequest,
        Some("a"),
    );
    t.ok(
        "Metrics without RTC",
        one(r2("a", 1).dest("<Metrics><Status>Enabled</Status></Metrics>")),
    );
    t.ok(
        "RTC Disabled with Metrics Disabled",
        one(r2("a", 1).dest("<ReplicationTime><Status>Disabled</Status><Time><Minutes>15</Minutes></Time></ReplicationTime><Metrics><Status>Disabled</Status></Metrics>")),
    );
    let enc = |k: &str| {
        format!(
            "<EncryptionConfiguration><ReplicaKmsKeyID>{k}</ReplicaKmsKeyID></EncryptionConfiguration>"
        )
    };
    let sse =
        |s: &str| format!("<SseKmsEncryptedObjects><Status>{s}</Status></SseKmsEncryptedObjects>");
    t.ok(
        "SSE-KMS selection with a replica key",
        one(r2("a", 1).ssc(&sse("Enabled")).dest(&enc(KMS))),
    );
    t.ok(
        "SSE-KMS selection with a replica key alias",
        one(r2("a", 1)
            .ssc(&sse("Enabled"))
            .dest(&enc("arn:aws:kms:eu-west-1:123456789012:alias/replicas"))),
    );
    t.bad(
        "SSE-KMS selection without a replica key",
        one(r2("a", 1).ssc(&sse("Enabled"))),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "SSE-KMS selection Disabled without a replica key",
        one(r2("a", 1).ssc(&sse("Disabled"))),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "EncryptionConfiguration without a ReplicaKmsKeyID",
        one(r2("a", 1).ssc(&sse("Enabled")).dest("<EncryptionConfiguration/>")),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "replica key without SSE-KMS selection",
        one(r2("a", 1).dest(&enc(KMS))),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "replica key that is not a KMS ARN",
        one(r2("a", 1).ssc(&sse("Enabled")).dest(&enc("1234abcd-12ab"))),
        InvalidArgument,
        Some("a"),
    );
    t.ok(
        "owner override with Account",
        one(r2("a", 1).dest("<Account>444455556666</Account><AccessControlTranslation><Owner>Destination</Owner></AccessControlTranslation>")),
    );
    t.bad(
        "owner override without Account",
        one(r2("a", 1).dest(
            "<AccessControlTranslation><Owner>Destination</Owner></AccessControlTranslation>",
        )),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "Account that is not 12 digits",
        one(r2("a", 1).dest("<Account>1234</Account>")),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "destination that is not an ARN",
        one(r2("a", 1).bucket("dst-bucket")),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "destination ARN with an invalid bucket name",
        one(r2("a", 1).bucket("arn:aws:s3:::Bad_Name")),
        InvalidArgument,
        Some("a"),
    );
    t.ok("destination in another partition", one(r2("a", 1).bucket("arn:aws-cn:s3:::dst-bucket")));
    t.bad("empty Role", one(r2("a", 1)).replace(ROLE, ""), InvalidArgument, None);
    t.bad(
        "Role that is not a role ARN",
        one(r2("a", 1)).replace(ROLE, "arn:aws:iam::123456789012:user/bob"),
        InvalidArgument,
        None,
    );
    t.ok(
        "Role with a path",
        one(r2("a", 1)).replace(ROLE, "arn:aws:iam::123456789012:role/service-role/s3crr"),
    );
    for sc in [
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
    ] {
        t.ok(
            &format!("storage class {sc}"),
            one(r2("a", 1).dest(&format!("<StorageClass>{sc}</StorageClass>"))),
        );
    }
    for sc in [
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
        "FSX_OPENZFS",
        "FSX_ONTAP",
        "AWS_BACKUP_WARM",
        "AWS_BACKUP_LOW_COST_WARM",
    ] {
        t.bad(
            &format!("storage class {sc} cannot hold replicas"),
            one(r2("a", 1).dest(&format!("<StorageClass>{sc}</StorageClass>"))),
            InvalidStorageClass,
            Some("a"),
        );
    }
}

fn context_cases(t: &mut Table) {
    let with = |t: &mut Table, name: &str, body: String, ctx: &'static str, expect| {
        t.push(name, None, body, Some(ctx), expect);
    };
    with(
        t,
        "context: all buckets fine",
        s3(&[r2("a", 1), r2("b", 2).bucket("arn:aws:s3:::dst-2")]),
        CTX_OK,
        Ok(()),
    );
    with(
        t,
        "context: source never versioned",
        one(r2("a", 1)),
        r#"{"source":{"bucket":"src-bucket","versioning":"Unversioned"}}"#,
        Err((InvalidRequest, None)),
    );
    with(
        t,
        "context: source versioning suspended",
        one(r2("a", 1)),
        r#"{"source":{"bucket":"src-bucket","versioning":"Suspended"}}"#,
        Err((InvalidRequest, None)),
    );
    with(
        t,
        "context: destination does not exist",
        one(r2("a", 1).bucket("arn:aws:s3:::nowhere")),
        CTX_OK,
        Err((InvalidRequest, Some("a"))),
    );
    with(
        t,
        "context: destination unversioned",
        one(r2("a", 1)),
        r#"{"buckets":{"dst-bucket":{"versioning":"Suspended"}}}"#,
        Err((InvalidRequest, Some("a"))),
    );
    with(
        t,
        "context: destination is the source",
        one(r2("a", 1).bucket("arn:aws:s3:::src-bucket")),
        CTX_OK,
        Err((InvalidRequest, Some("a"))),
    );
    with(
        t,
        "context: Object Lock source is accepted",
        one(r2("a", 1)),
        r#"{"source":{"bucket":"src-bucket","versioning":"Enabled","object_lock":true}}"#,
        Ok(()),
    );
    with(
        t,
        "context: unknown destinations are not checked",
        one(r2("a", 1).bucket("arn:aws:s3:::anything")),
        r#"{"source":{"bucket":"src-bucket","versioning":"Enabled"}}"#,
        Ok(()),
    );
}

fn outposts_cases(t: &mut Table) {
    let sc = Some(Variant::S3Control);
    let push =
        |t: &mut Table, name: &str, body: String, expect| t.push(name, sc, body, None, expect);
    t.ok("seed: Outposts XML example", include_str!("../../examples/outposts-replication.xml"));
    t.ok("seed: Outposts JSON example", include_str!("../../examples/outposts-replication.json"));
    push(t, "Outposts: minimal rule", ctl(&[ro("a", 1)]), Ok(()));
    push(
        t,
        "Outposts: And tags as S3Tag",
        ctl(&[ro("a", 1).filter("<And><Prefix>p</Prefix><Tags><S3Tag><Key>k</Key><Value>v</Value></S3Tag><S3Tag><Key>j</Key><Value>w</Value></S3Tag></Tags></And>")]),
        Ok(()),
    );
    push(
        t,
        "Outposts: And tags as member (botocore)",
        ctl(&[ro("a", 1).filter("<And><Tags><member><Key>k</Key><Value>v</Value></member><member><Key>j</Key><Value>w</Value></member></Tags></And>")]),
        Ok(()),
    );
    push(
        t,
        "Outposts: flattened Tag in And is the S3 shape, not S3 Control's",
        ctl(&[ro("a", 1).filter(&format!("<And><Prefix>p</Prefix>{}</And>", dest_tag("k", "v")))]),
        Err((MalformedXml, None)),
    );
    let many = |n: usize| {
        (0..n).map(|i| ro(&format!("r{i}"), i64::try_from(i).unwrap())).collect::<Vec<_>>()
    };
    push(t, "Outposts: 100 rules", ctl(&many(100)), Ok(()));
    push(t, "Outposts: 101 rules", ctl(&many(101)), Err((InvalidRequest, None)));
    push(
        t,
        "Outposts: RTC unsupported",
        ctl(&[ro("a", 1).dest(&format!("<StorageClass>OUTPOSTS</StorageClass>{RTC_OK}"))]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: metrics with EventThreshold unsupported",
        ctl(&[ro("a", 1).dest("<Metrics><Status>Enabled</Status><EventThreshold><Minutes>15</Minutes></EventThreshold></Metrics>")]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: metrics status only",
        ctl(&[ro("a", 1).dest("<Metrics><Status>Enabled</Status></Metrics>")]),
        Ok(()),
    );
    push(
        t,
        "Outposts: SSE-KMS selection unsupported",
        ctl(&[ro("a", 1).ssc("<SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects>").dest(&format!("<EncryptionConfiguration><ReplicaKmsKeyID>{KMS}</ReplicaKmsKeyID></EncryptionConfiguration>"))]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: EncryptionConfiguration unsupported",
        ctl(&[ro("a", 1).dest(&format!("<EncryptionConfiguration><ReplicaKmsKeyID>{KMS}</ReplicaKmsKeyID></EncryptionConfiguration>"))]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: owner override unsupported",
        ctl(&[ro("a", 1).dest("<Account>123456789012</Account><AccessControlTranslation><Owner>Destination</Owner></AccessControlTranslation>")]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: existing object replication unsupported",
        ctl(&[ro("a", 1).eor("Enabled")]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: storage class other than OUTPOSTS",
        ctl(&[ro("a", 1).dest("<StorageClass>STANDARD</StorageClass>")]),
        Err((InvalidStorageClass, Some("a"))),
    );
    push(
        t,
        "Outposts: rule without Bucket",
        ctl(&[ro("a", 1).extra("")]),
        Err((MalformedXml, None)),
    );
    push(
        t,
        "Outposts: rule Bucket not an access point ARN",
        ctl(&[ro("a", 1).extra("<Bucket>arn:aws:s3:::src</Bucket>")]),
        Err((InvalidArgument, Some("a"))),
    );
    push(
        t,
        "Outposts: V1 rule",
        ctl(&[ro("a", 1).no_prio().dmr(None).sel("<Prefix>p</Prefix>")]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: destination not an access point ARN",
        ctl(&[ro("a", 1).bucket(DST)]),
        Err((InvalidArgument, Some("a"))),
    );
    push(
        t,
        "Outposts: destination equals source",
        ctl(&[ro("a", 1).bucket(OP_SRC)]),
        Err((InvalidRequest, Some("a"))),
    );
    push(
        t,
        "Outposts: S3 namespace sent to S3 Control",
        ctl(&[ro("a", 1)]).replace(
            "http://awss3control.amazonaws.com/doc/2018-08-20/",
            "http://s3.amazonaws.com/doc/2006-03-01/",
        ),
        Err((MalformedXml, None)),
    );
    push(
        t,
        "Outposts: no namespace",
        ctl(&[ro("a", 1)])
            .replace(" xmlns=\"http://awss3control.amazonaws.com/doc/2018-08-20/\"", ""),
        Ok(()),
    );
}

fn json_cases(t: &mut Table) {
    let rule = |extra: &str| {
        format!(
            r#"{{"Role":"{ROLE}","Rules":[{{"ID":"j","Status":"Enabled","Priority":1,"Filter":{{"Prefix":""}},"Destination":{{"Bucket":"{DST}"}}{extra}}}]}}"#
        )
    };
    t.ok("JSON: V2 rule", rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#));
    t.bad("JSON: V2 rule without DeleteMarkerReplication", rule(""), InvalidRequest, Some("j"));
    t.bad(
        "JSON: Priority as a string",
        rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#)
            .replace(r#""Priority":1"#, r#""Priority":"1""#),
        MalformedXml,
        None,
    );
    t.bad(
        "JSON: unknown member",
        rule(r#","DeleteMarkerReplication":{"Status":"Disabled"},"Colour":"red""#),
        MalformedXml,
        None,
    );
    t.bad("JSON: not JSON", "{\"Role\":", MalformedXml, None);
    t.bad(
        "JSON: Filter with two members",
        rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#).replace(
            r#""Filter":{"Prefix":""}"#,
            r#""Filter":{"Prefix":"","Tag":{"Key":"k","Value":"v"}}"#,
        ),
        MalformedXml,
        None,
    );
    t.ok(
        "JSON: cli-input-json document",
        format!(
            r#"{{"Bucket":"src-bucket","ReplicationConfiguration":{}}}"#,
            rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#)
        ),
    );
    t.ok(
        "JSON: And with Tags list",
        rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#).replace(
            r#""Filter":{"Prefix":""}"#,
            r#""Filter":{"And":{"Prefix":"p/","Tags":[{"Key":"a","Value":"1"},{"Key":"b","Value":"2"}]}}"#,
        ),
    );
    t.bad(
        "JSON: duplicate tag keys",
        rule(r#","DeleteMarkerReplication":{"Status":"Disabled"}"#).replace(
            r#""Filter":{"Prefix":""}"#,
            r#""Filter":{"And":{"Tags":[{"Key":"a","Value":"1"},{"Key":"a","Value":"2"}]}}"#,
        ),
        InvalidRequest,
        Some("j"),
    );
    t.bad("JSON: missing Role", r#"{"Rules":[]}"#, MalformedXml, None);
}

/// Issue 29: `Not` (exclusion filters) and `UseSourceMultiRegionKey` (botocore 1.44).
fn current_model_cases(t: &mut Table) {
    let not = |inner: &str| format!("<Not>{inner}</Not>");
    let or = |inner: &str| not(&format!("<Or>{inner}</Or>"));
    let prefix = |p: &str| format!("<Prefix>{p}</Prefix>");
    t.ok("Not/Prefix alone in Filter", one(r2("a", 1).filter(&not(&prefix("tmp/")))));
    t.ok("Not/Tag alone in Filter", one(r2("a", 1).filter(&not(&dest_tag("k", "v")))));
    t.ok(
        "Not/Or of prefixes and tags",
        one(r2("a", 1).filter(&or(&format!(
            "{}{}{}{}",
            prefix("a/"),
            prefix("b/"),
            dest_tag("env", "dev"),
            dest_tag("env", "test")
        )))),
    );
    t.ok("Not/Or of one prefix", one(r2("a", 1).filter(&or(&prefix("a/")))));
    t.ok(
        "And with Prefix, Tags and Not",
        one(r2("a", 1).filter(&format!(
            "<And>{}{}{}</And>",
            prefix("logs/"),
            dest_tag("team", "x"),
            or(&format!("{}{}", prefix("logs/tmp/"), dest_tag("class", "secret")))
        ))),
    );
    t.ok(
        "And with Prefix and Not",
        one(r2("a", 1).filter(&format!(
            "<And>{}{}</And>",
            prefix("logs/"),
            not(&prefix("logs/tmp/"))
        ))),
    );
    t.ok(
        "And with only a Not (guessed)",
        one(r2("a", 1).filter(&format!("<And>{}</And>", not(&prefix("x"))))),
    );
    t.ok(
        "Not/Prefix with delete marker replication",
        one(r2("a", 1).filter(&not(&prefix("tmp/"))).dmr_enabled()),
    );
    t.bad("empty Not", one(r2("a", 1).filter("<Not/>")), MalformedXml, None);
    t.bad(
        "Not with a Prefix and a Tag",
        one(r2("a", 1).filter(&not(&format!("{}{}", prefix("p"), dest_tag("k", "v"))))),
        MalformedXml,
        None,
    );
    t.bad(
        "Not with two Prefixes",
        one(r2("a", 1).filter(&not(&format!("{0}{0}", prefix("p"))))),
        MalformedXml,
        None,
    );
    t.bad("empty Or", one(r2("a", 1).filter(&or(""))), MalformedXml, None);
    t.bad(
        "Or outside Not",
        one(r2("a", 1).filter(&format!("<Or>{}</Or>", prefix("p")))),
        MalformedXml,
        None,
    );
    t.bad(
        "Not beside a Prefix in Filter",
        one(r2("a", 1).filter(&format!("{}{}", prefix("p"), not(&prefix("q"))))),
        MalformedXml,
        None,
    );
    t.bad(
        "unknown element in Not",
        one(r2("a", 1).filter(&not("<Suffix>.tmp</Suffix>"))),
        MalformedXml,
        None,
    );
    t.bad(
        "Not/Prefix over 1024 bytes",
        one(r2("a", 1).filter(&not(&prefix(&"p".repeat(1025))))),
        InvalidArgument,
        Some("a"),
    );
    t.bad(
        "Not/Tag with an empty key",
        one(r2("a", 1).filter(&not(&dest_tag("", "v")))),
        InvalidTag,
        Some("a"),
    );
    t.bad(
        "Not/Or tag value with a forbidden character",
        one(r2("a", 1).filter(&or(&dest_tag("k", "v?")))),
        InvalidTag,
        Some("a"),
    );
    t.bad(
        "delete marker replication with a Not/Tag (guessed)",
        one(r2("a", 1).filter(&not(&dest_tag("k", "v"))).dmr_enabled()),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "delete marker replication with a tag in Not/Or (guessed)",
        one(r2("a", 1)
            .filter(&or(&format!("{}{}", prefix("p"), dest_tag("k", "v"))))
            .dmr_enabled()),
        InvalidRequest,
        Some("a"),
    );
    t.push(
        "S3 Control has no Not",
        Some(Variant::S3Control),
        ctl(&[ro("a", 1).filter(&not(&prefix("p")))]),
        None,
        Err((MalformedXml, None)),
    );
    let usmrk = |status: &str| {
        format!("<UseSourceMultiRegionKey><Status>{status}</Status></UseSourceMultiRegionKey>")
    };
    let sse = "<SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects>";
    let enc = |inner: &str| format!("<EncryptionConfiguration>{inner}</EncryptionConfiguration>");
    t.ok(
        "UseSourceMultiRegionKey Enabled without ReplicaKmsKeyID (guessed)",
        one(r2("a", 1).ssc(sse).dest(&enc(&usmrk("Enabled")))),
    );
    t.ok(
        "UseSourceMultiRegionKey Enabled with ReplicaKmsKeyID",
        one(r2("a", 1)
            .ssc(sse)
            .dest(&enc(&format!("<ReplicaKmsKeyID>{KMS}</ReplicaKmsKeyID>{}", usmrk("Enabled"))))),
    );
    t.ok(
        "UseSourceMultiRegionKey Disabled with ReplicaKmsKeyID",
        one(r2("a", 1)
            .ssc(sse)
            .dest(&enc(&format!("<ReplicaKmsKeyID>{KMS}</ReplicaKmsKeyID>{}", usmrk("Disabled"))))),
    );
    t.bad(
        "UseSourceMultiRegionKey Disabled without ReplicaKmsKeyID",
        one(r2("a", 1).ssc(sse).dest(&enc(&usmrk("Disabled")))),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "UseSourceMultiRegionKey without SseKmsEncryptedObjects",
        one(r2("a", 1).dest(&enc(&usmrk("Enabled")))),
        InvalidRequest,
        Some("a"),
    );
    t.bad(
        "UseSourceMultiRegionKey without Status",
        one(r2("a", 1).ssc(sse).dest(&enc("<UseSourceMultiRegionKey/>"))),
        MalformedXml,
        None,
    );
    t.bad(
        "UseSourceMultiRegionKey with status On",
        one(r2("a", 1).ssc(sse).dest(&enc(&usmrk("On")))),
        MalformedXml,
        None,
    );
    t.push(
        "S3 Control has no UseSourceMultiRegionKey",
        Some(Variant::S3Control),
        ctl(&[ro("a", 1)
            .dest(&format!("<StorageClass>OUTPOSTS</StorageClass>{}", enc(&usmrk("Enabled"))))]),
        None,
        Err((MalformedXml, None)),
    );
    let json = |filter: &str, dest: &str| {
        format!(
            r#"{{"Role":"{ROLE}","Rules":[{{"ID":"j","Status":"Enabled","Priority":1,"Filter":{filter},"DeleteMarkerReplication":{{"Status":"Disabled"}},"SourceSelectionCriteria":{{"SseKmsEncryptedObjects":{{"Status":"Enabled"}}}},"Destination":{{"Bucket":"{DST}","EncryptionConfiguration":{dest}}}}}]}}"#
        )
    };
    let key = format!(r#"{{"ReplicaKmsKeyID":"{KMS}"}}"#);
    t.ok(
        "JSON: And with Not/Or (Prefixes, Tags)",
        json(
            r#"{"And":{"Prefix":"logs/","Not":{"Or":{"Prefixes":["logs/tmp/","logs/x"],"Tags":[{"Key":"a","Value":"1"}]}}}}"#,
            &key,
        ),
    );
    t.ok(
        "JSON: UseSourceMultiRegionKey",
        json("{}", r#"{"UseSourceMultiRegionKey":{"Status":"Enabled"}}"#),
    );
    t.bad(
        "JSON: Not with Prefix and Or",
        json(r#"{"Not":{"Prefix":"a","Or":{"Prefixes":["b"]}}}"#, &key),
        MalformedXml,
        None,
    );
    t.bad("JSON: empty Or", json(r#"{"Not":{"Or":{}}}"#, &key), MalformedXml, None);
    t.bad(
        "JSON: Or member spelled as in XML",
        json(r#"{"Not":{"Or":{"Prefix":["b"]}}}"#, &key),
        MalformedXml,
        None,
    );
    t.bad(
        "JSON: UseSourceMultiRegionKey without Status",
        json("{}", r#"{"UseSourceMultiRegionKey":{}}"#),
        MalformedXml,
        None,
    );
}

fn table() -> Table {
    let mut t = Table::default();
    current_model_cases(&mut t);
    shape_cases(&mut t);
    schema_cases(&mut t);
    tag_cases(&mut t);
    destination_cases(&mut t);
    context_cases(&mut t);
    outposts_cases(&mut t);
    json_cases(&mut t);
    t
}

#[test]
fn conformance_table() {
    let t = table();
    assert!(t.0.len() >= 100, "the table has {} cases", t.0.len());
    let mut failures = Vec::new();
    for case in &t.0 {
        let got = run(case);
        let matches = match (&got, &case.expect) {
            (Ok(()), Ok(())) => true,
            (Err((code, rule)), Err((want_code, want_rule))) => {
                code == want_code && rule.as_deref() == *want_rule
            }
            _ => false,
        };
        if !matches {
            failures.push(format!("{}: expected {:?}, got {:?}", case.name, case.expect, got));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        t.0.len(),
        failures.join("\n")
    );
}

/// Every accepted document survives serialize → parse in both syntaxes, and is still valid.
#[test]
fn accepted_cases_round_trip() {
    for case in table().0.iter().filter(|c| c.expect.is_ok()) {
        let config = ReplicationConfiguration::parse(case.body.as_bytes(), case.variant).unwrap();
        let from_xml =
            ReplicationConfiguration::from_xml(config.to_xml().as_bytes(), Some(config.variant))
                .unwrap();
        assert_eq!(from_xml, config, "XML round trip of {}", case.name);
        let from_json =
            ReplicationConfiguration::from_json(config.to_json().as_bytes(), Some(config.variant))
                .unwrap();
        assert_eq!(from_json, config, "JSON round trip of {}", case.name);
    }
}

/// The same mistake gets the same answer in XML and JSON.
#[test]
fn xml_and_json_agree_on_semantic_errors() {
    for case in table().0.iter().filter(|c| matches!(c.expect, Err((code, _)) if code != MalformedXml && code != MaxMessageLengthExceeded)) {
        if case.body.trim_start().starts_with('{') {
            continue;
        }
        let config = ReplicationConfiguration::parse(case.body.as_bytes(), case.variant).unwrap();
        let ctx: BucketContext = case.ctx.map(|c| serde_json::from_str(c).unwrap()).unwrap_or_default();
        let via_json = ReplicationConfiguration::from_json(config.to_json().as_bytes(), Some(config.variant)).unwrap();
        assert_eq!(via_json.validate(&ctx), config.validate(&ctx), "{}", case.name);
    }
}

#[test]
fn generated_ids_are_stable_and_unique() {
    let body = s3(&[r2("", 1), r2("", 2).bucket("arn:aws:s3:::dst-2")]).replace("<ID></ID>", "");
    let a = ReplicationConfiguration::parse(body.as_bytes(), None).unwrap();
    let b = ReplicationConfiguration::parse(body.as_bytes(), None).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.rules[0].id, a.rules[1].id);
    assert!(a.rules.iter().all(|r| !r.id.is_empty() && r.id.len() <= 255));
    let json = ReplicationConfiguration::from_json(a.to_json().as_bytes(), None).unwrap();
    assert_eq!(json.rules[0].id, a.rules[0].id);
}

#[test]
fn malformed_messages_carry_s3_wording_and_detail() {
    let e = ReplicationConfiguration::parse(one(r2("a", 1).extra("<Foo/>")).as_bytes(), None)
        .unwrap_err();
    assert!(e.message.starts_with(s3repl::config::MALFORMED_XML_MESSAGE), "{}", e.message);
    assert!(e.message.contains("<Foo>"), "{}", e.message);
    let e = ReplicationConfiguration::parse(one(r2("a", 1).dmr(None)).as_bytes(), None)
        .unwrap()
        .validate(&BucketContext::default())
        .unwrap_err();
    assert_eq!(
        e.message,
        "DeleteMarkerReplication must be specified for this version of Cross Region Replication configuration schema. Please refer to S3 Developer Guide for more information."
    );
}
