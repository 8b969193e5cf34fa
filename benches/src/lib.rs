//! Shared fixtures for the criterion benchmarks in `benches/benches/`.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

use std::fmt::Write as _;

/// A V2 configuration of `rules` rules, priorities `0..rules`, spread over four destinations.
///
/// Rule `i` selects prefix `tenant-{i:04}/`; with `tags`, every rule also requires the tag
/// `class=c{i % 5}` (through `And`).
pub fn rules_xml(rules: usize, tags: bool) -> String {
    rules_xml_with(rules, |i| {
        if tags {
            format!(
                "<And><Prefix>tenant-{i:04}/</Prefix><Tag><Key>class</Key><Value>c{}</Value></Tag></And>",
                i % 5
            )
        } else {
            format!("<Prefix>tenant-{i:04}/</Prefix>")
        }
    })
}

/// [`rules_xml`] without tags where every fourth rule also excludes (`Not/Or`) two prefixes
/// under its own (`tenant-{i:04}/tmp/` and `tenant-{i:04}/a`, which some [`keys`] start with)
/// and the tag `class=secret`.
pub fn rules_xml_excluding(rules: usize) -> String {
    rules_xml_with(rules, |i| {
        if i % 4 == 0 {
            format!(
                "<And><Prefix>tenant-{i:04}/</Prefix><Not><Or><Prefix>tenant-{i:04}/tmp/</Prefix>\
                 <Prefix>tenant-{i:04}/a</Prefix><Tag><Key>class</Key><Value>secret</Value></Tag>\
                 </Or></Not></And>"
            )
        } else {
            format!("<Prefix>tenant-{i:04}/</Prefix>")
        }
    })
}

/// A V2 configuration of `rules` rules, priorities `0..rules`, spread over four destinations,
/// rule `i` with the filter `filter(i)` (the `Filter` element's content).
fn rules_xml_with(rules: usize, filter: impl Fn(usize) -> String) -> String {
    let mut xml =
        String::from("<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role>");
    for i in 0..rules {
        let _ = write!(
            xml,
            "<Rule><ID>r{i}</ID><Priority>{i}</Priority><Filter>{}</Filter>\
             <Status>Enabled</Status><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>\
             <Destination><Bucket>arn:aws:s3:::dst-{}</Bucket></Destination></Rule>",
            filter(i),
            i % 4
        );
    }
    xml.push_str("</ReplicationConfiguration>");
    xml
}

/// `count` keys of exactly `len` bytes (at least 12), each under one of the first `rules`
/// rule prefixes, round robin, padded with a path.
pub fn keys(rules: usize, len: usize, count: usize) -> Vec<String> {
    (0..count)
        .map(|j| {
            let mut k = format!("tenant-{:04}/", j % rules.max(1));
            let mut n = j;
            while k.len() < len {
                k.push(char::from(b'a' + u8::try_from(n % 26).unwrap_or(0)));
                n = n / 26 + 7;
                if k.len() % 9 == 0 && k.len() < len {
                    k.push('/');
                }
            }
            k.truncate(len.max(12));
            k
        })
        .collect()
}

/// Reads partition 0 of the log in `dir` from its start to its end, `out` reused for every
/// batch of up to 4096 records; returns how many records it read.
pub fn read_partition(
    dir: &std::path::Path,
    opts: s3repl::log::ReadOptions,
    out: &mut s3repl::log::RecordBatch,
) -> Result<u64, s3repl::LogError> {
    let mut r = s3repl::log::LogReader::open(s3repl::log::FileStorage, dir, 0, 0, opts);
    let mut n = 0u64;
    loop {
        out.clear();
        let got = r.read_records(4096, out)?;
        if got == 0 {
            return Ok(n);
        }
        n += got as u64;
    }
}
