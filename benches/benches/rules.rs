//! Rule matching: the compiled trie matcher beside the linear-scan reference, for 1 to 1,000
//! rules, 16/64/256-byte keys, with and without tag predicates, and with exclusions on a
//! quarter of the rules; and compile time.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use s3repl::config::ReplicationConfiguration;
use s3repl::rules::{CompiledRules, Plan, VersionEvent};
use s3repl_benches::{keys, rules_xml, rules_xml_excluding};
use s3repl_tests::reference::reference;

const BATCH: usize = 256;

fn matching(c: &mut Criterion) {
    let tags = [("class", "c3"), ("team", "storage")];
    for with_tags in [false, true] {
        let mut group = c.benchmark_group(if with_tags { "match_tags" } else { "match" });
        group.throughput(Throughput::Elements(BATCH as u64));
        for rules in [1usize, 10, 100, 1000] {
            let config =
                ReplicationConfiguration::parse(rules_xml(rules, with_tags).as_bytes(), None)
                    .unwrap();
            let compiled = CompiledRules::compile(&config).unwrap();
            for len in [16usize, 64, 256] {
                let ks = keys(rules, len, BATCH);
                let events: Vec<VersionEvent<'_>> = ks
                    .iter()
                    .map(|k| VersionEvent { key: k, tags: &tags, ..VersionEvent::default() })
                    .collect();
                compiled_and_linear(
                    &mut group,
                    &format!("{rules}rules/{len}B"),
                    &config,
                    &compiled,
                    &events,
                );
            }
        }
        group.finish();
    }
}

/// Issue 29's target: 1,000 rules, a quarter of them with exclusions (`Not/Or` of two
/// prefixes and a tag), 64-byte keys of which some are excluded.
fn matching_with_exclusions(c: &mut Criterion) {
    let tags = [("class", "c3"), ("team", "storage")];
    let mut group = c.benchmark_group("match_exclusions");
    group.throughput(Throughput::Elements(BATCH as u64));
    for rules in [100usize, 1000] {
        let config =
            ReplicationConfiguration::parse(rules_xml_excluding(rules).as_bytes(), None).unwrap();
        let compiled = CompiledRules::compile(&config).unwrap();
        let ks = keys(rules, 64, BATCH);
        let events: Vec<VersionEvent<'_>> = ks
            .iter()
            .map(|k| VersionEvent { key: k, tags: &tags, ..VersionEvent::default() })
            .collect();
        let excluded =
            events.iter().filter(|ev| compiled.match_event(ev).replications().is_empty()).count();
        assert!(excluded > 0 && excluded < BATCH, "{excluded} of {BATCH} keys excluded");
        compiled_and_linear(&mut group, &format!("{rules}rules/64B"), &config, &compiled, &events);
    }
    group.finish();
}

/// The compiled matcher and the linear reference over the same events, side by side.
fn compiled_and_linear(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    config: &ReplicationConfiguration,
    compiled: &CompiledRules,
    events: &[VersionEvent<'_>],
) {
    let mut plan = Plan::default();
    group.bench_with_input(BenchmarkId::new("compiled", id), events, |b, events| {
        b.iter(|| {
            let mut n = 0;
            for ev in events {
                compiled.match_into(ev, &mut plan);
                n += plan.replications().len();
            }
            n
        });
    });
    group.bench_with_input(BenchmarkId::new("linear", id), events, |b, events| {
        b.iter(|| events.iter().map(|ev| reference(config, ev).len()).sum::<usize>());
    });
}

fn compile(c: &mut Criterion) {
    let config = ReplicationConfiguration::parse(rules_xml(1000, true).as_bytes(), None).unwrap();
    c.bench_function("compile/1000rules", |b| b.iter(|| CompiledRules::compile(&config).unwrap()));
}

criterion_group!(benches, matching, matching_with_exclusions, compile);
criterion_main!(benches);
