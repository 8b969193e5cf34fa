//! The matcher's hot path allocates nothing: a counting global allocator watches
//! `CompiledRules::match_into` on a warmed-up `Plan`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]
#![allow(clippy::format_push_string, clippy::struct_excessive_bools, clippy::too_many_lines)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use s3repl::config::ReplicationConfiguration;
use s3repl::rules::{CompiledRules, EventKind, Plan, VersionEvent};

thread_local! {
    /// Allocations made by this thread while counting is on (thread-local, so the test
    /// harness's other threads do not disturb the count).
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(Some(0)));
    let r = f();
    let n = COUNT.with(|c| c.replace(None)).unwrap_or(0);
    (r, n)
}

#[test]
fn match_into_does_not_allocate() {
    let mut xml =
        String::from("<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role>");
    for i in 0..1000 {
        // Every fifth rule excludes part of its prefix (the exclusion trie and stamps run too).
        let filter = if i % 5 == 1 {
            format!(
                "<And><Prefix>p{:03}/</Prefix><Not><Or><Prefix>p{:03}/object-1</Prefix>\
                 <Tag><Key>k</Key><Value>v3</Value></Tag></Or></Not></And>",
                i % 500,
                i % 500
            )
        } else if i % 3 == 0 {
            format!(
                "<And><Prefix>p{:03}/</Prefix><Tag><Key>k</Key><Value>v{}</Value></Tag></And>",
                i % 500,
                i % 7
            )
        } else {
            format!("<Prefix>p{:03}/</Prefix>", i % 500)
        };
        xml.push_str(&format!(
            "<Rule><ID>r{i}</ID><Priority>{i}</Priority><Filter>{filter}</Filter><Status>Enabled</Status>\
             <DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>\
             <Destination><Bucket>arn:aws:s3:::dst-{}</Bucket></Destination></Rule>",
            i % 4
        ));
    }
    xml.push_str("</ReplicationConfiguration>");
    let rules =
        CompiledRules::compile(&ReplicationConfiguration::parse(xml.as_bytes(), None).unwrap())
            .unwrap();
    let keys: Vec<String> = (0..600).map(|i| format!("p{:03}/object-{i}", i % 520)).collect();
    let tags = [("k", "v3"), ("other", "x")];
    let mut plan = Plan::default();
    // Warm up: the plan grows to the number of destinations once.
    rules.match_into(&VersionEvent { key: &keys[0], ..VersionEvent::default() }, &mut plan);
    let (matched, allocations) = counted(|| {
        let mut matched = 0usize;
        for key in &keys {
            for kind in [EventKind::Put, EventKind::DeleteMarker, EventKind::MetadataUpdate] {
                let ev = VersionEvent { key, kind, tags: &tags, ..VersionEvent::default() };
                rules.match_into(&ev, &mut plan);
                matched += plan.replications().len();
            }
        }
        matched
    });
    assert!(matched > 0, "the workload must match something");
    assert_eq!(
        allocations,
        0,
        "match_into allocated {allocations} times over {} events",
        keys.len() * 3
    );
    // The counter itself works.
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 16]));
    assert!(n >= 1);
}
