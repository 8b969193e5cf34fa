//! Shared fixtures for the criterion benchmarks in `benches/benches/`.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

/// A V2 configuration with `rules` prefix rules (`p0000/`, `p0001/`, ...) to one destination.
pub fn prefix_rules_xml(rules: usize) -> String {
    let mut xml =
        String::from("<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role>");
    for i in 0..rules {
        xml.push_str(&format!(
            "<Rule><ID>r{i}</ID><Priority>{i}</Priority><Filter><Prefix>p{i:04}/</Prefix></Filter>\
             <Status>Enabled</Status><DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>\
             <Destination><Bucket>arn:aws:s3:::dst</Bucket></Destination></Rule>"
        ));
    }
    xml.push_str("</ReplicationConfiguration>");
    xml
}
