//! Parsing and validating configurations of 1 to 1,000 rules, XML beside JSON.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use s3repl::config::{BucketContext, ReplicationConfiguration};

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_parse");
    for rules in [1usize, 100, 1000] {
        let xml = s3repl_benches::rules_xml(rules, false);
        let json = ReplicationConfiguration::from_xml(xml.as_bytes(), None)
            .map(|c| c.to_json())
            .unwrap_or_default();
        group.throughput(Throughput::Elements(rules as u64));
        group.bench_with_input(BenchmarkId::new("xml", rules), &xml, |b, xml| {
            b.iter(|| ReplicationConfiguration::from_xml(xml.as_bytes(), None));
        });
        group.bench_with_input(BenchmarkId::new("json", rules), &json, |b, json| {
            b.iter(|| ReplicationConfiguration::from_json(json.as_bytes(), None));
        });
        if let Ok(config) = ReplicationConfiguration::from_xml(xml.as_bytes(), None) {
            group.bench_with_input(BenchmarkId::new("validate", rules), &config, |b, config| {
                b.iter(|| config.validate(&BucketContext::default()));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
