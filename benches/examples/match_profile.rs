//! Runs the matcher in a loop for profilers (`valgrind --tool=callgrind`, `perf`):
//! `cargo run --release -p s3repl-benches --example match_profile -- RULES KEYLEN ITERATIONS`.
#![allow(missing_docs, clippy::unwrap_used, clippy::cast_precision_loss)]

use s3repl::config::ReplicationConfiguration;
use s3repl::rules::{CompiledRules, Plan, VersionEvent};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (rules, len, iters) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(64),
        args.get(2).copied().unwrap_or(1000),
    );
    let config =
        ReplicationConfiguration::parse(s3repl_benches::rules_xml(rules, false).as_bytes(), None)
            .unwrap();
    let compiled = CompiledRules::compile(&config).unwrap();
    let keys = s3repl_benches::keys(rules, len, 256);
    let events: Vec<VersionEvent<'_>> =
        keys.iter().map(|k| VersionEvent { key: k, ..VersionEvent::default() }).collect();
    let mut plan = Plan::default();
    let mut n = 0usize;
    let t = std::time::Instant::now();
    for _ in 0..iters {
        for ev in &events {
            compiled.match_into(ev, &mut plan);
            n += plan.replications().len();
        }
    }
    let per = t.elapsed().as_nanos() as f64 / (iters * events.len()) as f64;
    println!("{n} replications, {per:.1} ns per match");
}
