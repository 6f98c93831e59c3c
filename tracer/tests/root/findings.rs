//! Root tests of the findings, one pattern of workloads/findings.c each, with the numbers the
//! workload makes; and a clean run that has none.

use crate::support::*;
use serde_json::Value;

fn run(pattern: &str) -> (Value, String) {
    let w = workload("findings");
    let (v, out) = trace_with(&[], &[w.to_str().unwrap(), pattern], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    (v, stderr(&out))
}

/// The finding of `kind`, which must also be the first (the most at stake).
fn first<'a>(v: &'a Value, kind: &str) -> &'a Value {
    let f = &v["findings"][0];
    assert_eq!(f["kind"], kind, "{:#}", v["findings"]);
    f
}

fn site_function(f: &Value) -> &str {
    f["site"][0]["function"].as_str().unwrap_or("?")
}

#[test]
fn retained_heap_names_the_block_pinning_the_top() {
    let (v, text) = run("retained");
    let f = first(&v, "retained_heap");
    // 20,000 blocks of 512 bytes (chunks of 528) were touched and freed; 64 bytes stay live.
    let retained = f["evidence"]["retained_resident_bytes"].as_u64().unwrap();
    assert!((10_000_000..12_000_000).contains(&retained), "{retained}");
    assert_eq!(f["evidence"]["live_bytes"], 64);
    assert_eq!(site_function(f), "pin_top");
    // 10 MiB is medium in itself, high as nearly all the process ever held (about 11 MiB).
    assert_eq!(f["severity"], "high");
    assert!(f["suggestion"].as_str().unwrap().contains("malloc_trim"));
    // Shown first in the text summary.
    let findings = text.find("findings (most at stake first)").unwrap();
    assert!(findings < text.find("memory path").unwrap(), "{text}");
    assert!(text.contains("[high] retained_heap:"), "{text}");
}

#[test]
fn mmap_churn_counts_maps_and_faults() {
    let (v, _) = run("churn");
    let f = first(&v, "mmap_churn");
    assert_eq!(site_function(f), "churn_big");
    let e = &f["evidence"];
    assert_eq!(
        (
            e["allocs"].clone(),
            e["frees"].clone(),
            e["mmap_calls"].clone()
        ),
        (50.into(), 50.into(), 50.into())
    );
    assert_eq!(e["bytes"], 50 * (33u64 << 20));
    // Four pages touched each time (and the allocator's header page among them).
    let faults = e["page_faults"].as_u64().unwrap();
    assert!((200..=260).contains(&faults), "{faults}");
    assert!(f["suggestion"].as_str().unwrap().contains("32 MiB"));
    // Those mmaps made kernel objects inside the malloc calls (VMAs and maple tree nodes;
    // fewer than one VMA each, since a new mapping next to an old one is merged into it): the
    // site is charged the objects and their bytes, each between 8 B and a kmalloc-8k.
    let paths = &site_in(&v, "churn_big")["paths"];
    let objects = paths["slab_objects"].as_u64().unwrap();
    let bytes = paths["slab_bytes"].as_u64().unwrap();
    assert!(objects > 0, "{paths}");
    assert!(bytes >= objects * 8 && bytes <= objects * 8192, "{paths}");
}

#[test]
fn realloc_moves_count_copies() {
    let (v, _) = run("realloc");
    let f = first(&v, "realloc_moves");
    assert_eq!(site_function(f), "grow_buffer");
    let e = &f["evidence"];
    assert_eq!(e["moves"], 99);
    // One buffer, moved 99 times: not 99 blocks moved once.
    assert_eq!(
        (
            e["moved_blocks"].clone(),
            e["most_moves_of_a_block"].clone()
        ),
        (1.into(), 99.into())
    );
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("grew its block by realloc and moved it 99 times"),
        "{f}"
    );
    assert_eq!(e["copied_bytes"], 5_068_800);
    assert_eq!(e["growth_factor"], 1.02);
}

#[test]
fn short_lived_hotspot_counts_temporaries() {
    let (v, _) = run("temporary");
    let f = first(&v, "short_lived_hotspot");
    assert_eq!(site_function(f), "scratch64");
    let e = &f["evidence"];
    assert_eq!(
        (e["allocs"].clone(), e["temporary"].clone()),
        (100_000.into(), 100_000.into())
    );
    assert_eq!(e["bytes"], 6_400_000);
    // The cost, from the run's own timing of the site's calls: a malloc and a free each.
    let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k}: {e}"));
    assert!(n("call_ns") >= 100_000, "{e}");
    assert_eq!(n("mean_call_ns"), n("call_ns") / 100_000);
    assert_eq!(n("estimated_ns"), 2 * 100_000 * n("mean_call_ns"));
    assert!(
        f["message"].as_str().unwrap().contains(" ms in all ("),
        "{f}"
    );
}

#[test]
fn leaks_are_findings_split_resident_and_untouched() {
    let (v, _) = run("leak");
    let f = first(&v, "leak");
    assert_eq!(site_function(f), "leak100");
    let e = &f["evidence"];
    // The leak check at exit: the last block is still in `sink` (reachable, no leak); the
    // 1,999 before it are definitely lost, a medium finding however small.
    assert_eq!(
        (e["kind"].clone(), e["blocks"].clone(), e["bytes"].clone()),
        ("lost".into(), 1999.into(), 199_900.into())
    );
    assert_eq!(f["severity"], "medium");
    assert_eq!(
        e["resident_bytes"].as_u64().unwrap() + e["never_touched_bytes"].as_u64().unwrap(),
        199_900
    );
}

#[test]
fn many_small_maps_cost_the_kernel() {
    let (v, _) = run("mmaps");
    let f = first(&v, "kernel_overhead");
    let e = &f["evidence"];
    assert!(e["mmap_calls"].as_u64().unwrap() >= 5000, "{e}");
    // Each kept mapping holds kernel objects (a VMA, maple-tree nodes and the like) while the
    // process runs; the end may or may not have seen them freed.
    assert!(e["slab_peak_bytes"].as_u64().unwrap() >= 512 << 10, "{e}");
    assert!(!e["top_caches"].as_array().unwrap().is_empty(), "{e}");
}

#[test]
fn thread_arenas_reserve_far_more_than_they_use() {
    let (v, _) = run("arenas");
    let f = first(&v, "arena_sprawl");
    let e = &f["evidence"];
    // Eight arenas of 64 MiB reserved; a few pages touched in each.
    let mapped = e["arena_mapped_bytes"].as_u64().unwrap();
    assert!(mapped >= 8 * (64 << 20), "{e}");
    assert!(e["arena_resident_bytes"].as_u64().unwrap() < 8 << 20, "{e}");
    assert_eq!(e["threads"], 9);
    assert_eq!(e["thread_arena_allocated_bytes"], 8 * 64);
    assert_eq!(f["severity"], "high");
}

#[test]
fn a_clean_run_has_no_findings() {
    let (v, text) = run("clean");
    assert_eq!(v["findings"], serde_json::json!([]), "{:#}", v["findings"]);
    assert!(!text.contains("findings (most at stake first)"), "{text}");
}
