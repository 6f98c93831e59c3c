//! Root tests of the allocator uprobes: exact calls from workloads whose allocations are known.

use crate::support::*;
use serde_json::{Value, json};

fn calls(v: &Value, func: &str) -> i64 {
    v["user"][func]["calls"].as_i64().unwrap()
}

fn bytes(v: &Value, func: &str) -> i64 {
    v["user"][func]["bytes"].as_i64().unwrap()
}

/// The frames of a site or leak as (function, file name, line).
fn frames(entry: &Value) -> Vec<(String, String, i64)> {
    entry["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or("?").to_string(),
                f["file"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                f["line"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// The family's functions, each a known number of times with known sizes. Start-up makes its
/// own calls (none here, but the loader may), so counts are taken relative to a run of zero
/// iterations.
#[test]
fn each_function_of_the_family_exactly() {
    // This kernel (6.13+) has uprobe sessions: `auto` takes them.
    let (v, _) = trace_command(&[workload("alloc").to_str().unwrap(), "0"]);
    assert_eq!(v["user"]["uprobe_links"], "session");
    for links in ["session", "multi", "single"] {
        family_exactly(links);
    }
}

fn family_exactly(links: &str) {
    let w = workload("alloc");
    let w = w.to_str().unwrap();
    let options = ["--uprobe-links", links];
    let (base, _) = trace_with(&options, &[w, "0"], &[]);
    let (run, out) = trace_with(&options, &[w, "3"], &[]);
    assert_eq!(run["user"]["uprobe_links"], links);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = |f: &str| calls(&run, f) - calls(&base, f);
    let db = |f: &str| bytes(&run, f) - bytes(&base, f);
    assert_eq!(
        (d("malloc"), db("malloc")),
        (3 * 4, 3 * (10 + 100 + 1000 + (1 << 48)))
    );
    assert_eq!((d("calloc"), db("calloc")), (3 * 2, 3 * 1100));
    assert_eq!((d("realloc"), db("realloc")), (3 * 3, 3 * 5050));
    assert_eq!((d("reallocarray"), db("reallocarray")), (3, 3 * 200));
    assert_eq!((d("posix_memalign"), db("posix_memalign")), (3, 3 * 256));
    // glibc may export memalign and aligned_alloc as one function: one probe serves both.
    assert_eq!(d("aligned_alloc") + d("memalign"), 3 * 2);
    assert_eq!(db("aligned_alloc") + db("memalign"), 3 * (128 + 192));
    assert_eq!((d("valloc"), db("valloc")), (3, 3 * 300));
    assert_eq!((d("pvalloc"), db("pvalloc")), (3, 3 * 400));
    assert_eq!(d("operator_new"), 0);
    let free = &run["user"]["free"];
    assert_eq!(
        free["calls"].as_i64().unwrap() - base["user"]["free"]["calls"].as_i64().unwrap(),
        3 * 12
    );
    assert_eq!(
        free["null"].as_i64().unwrap() - base["user"]["free"]["null"].as_i64().unwrap(),
        3
    );
    assert_eq!(free["unknown"], base["user"]["free"]["unknown"]);
    assert_eq!(
        run["user"]["failed"].as_i64().unwrap() - base["user"]["failed"].as_i64().unwrap(),
        3
    );
    // Everything but the one leak was freed (realloc(p, 0) included).
    assert_eq!(
        run["user"]["live_bytes_at_end"],
        base["user"]["live_bytes_at_end"]
    );
    assert_eq!(run["events"]["dropped"], 0);
    assert_eq!(run["events"]["stacks_lost"], 0);
    let files = run["user"]["allocator_files"].to_string();
    assert!(files.contains("libc.so"), "{files}");
}

/// A deliberate leak is reported at its file and line, with its caller.
#[test]
fn leak_at_file_and_line() {
    let w = workload("alloc");
    let (v, _) = trace_command(&[w.to_str().unwrap(), "1"]);
    let line = line_of("alloc.c", "/* LEAK */") as i64;
    let leak = &leak_of(&v, 4242);
    assert_eq!(leak["count"], 1);
    assert!(leak["oldest_age_ms"].as_f64().unwrap() >= 0.0);
    let f = frames(leak);
    assert_eq!(f[0], ("leak_here".into(), "alloc.c".into(), line), "{f:?}");
    assert_eq!(f[1].0, "main", "{f:?}");
    // The family's first line: malloc(10), malloc(100) and malloc(1000), one site since its
    // three calls resolve to the same frames; each block allocated and freed once.
    let first_line = line_of("alloc.c", "void *a = keep(malloc(10))") as i64;
    let site = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| frames(s)[0] == ("family".into(), "alloc.c".into(), first_line))
        .expect("the site of the family's first line");
    assert_eq!(
        (
            site["allocs"].clone(),
            site["bytes"].clone(),
            site["frees"].clone(),
            site["live_bytes"].clone()
        ),
        (json!(3), json!(1110), json!(3), json!(0))
    );
}

/// Built without frame pointers, the direct caller is still right (read from the stack top).
#[test]
fn direct_caller_without_frame_pointers() {
    let w = build(
        "alloc-nofp",
        "alloc.c",
        &["cc", "-O2", "-g", "-fomit-frame-pointer", "-pthread"],
    );
    let (v, _) = trace_command(&[w.to_str().unwrap(), "2"]);
    let line = line_of("alloc.c", "/* LEAK */") as i64;
    let leak = leak_of(&v, 4242);
    assert_eq!(
        frames(&leak)[0],
        ("leak_here".into(), "alloc.c".into(), line)
    );
    assert_eq!(calls(&v, "valloc"), 2);
}

/// Blocks allocated on one thread and freed on others: every free pairs with its block.
#[test]
fn frees_from_other_threads() {
    let w = workload("alloc");
    let (v, _) = trace_command(&[w.to_str().unwrap(), "threads", "4", "100"]);
    // One call site, malloc(64 * (t + 1)) for t in 0..4, 100 blocks each, all made before
    // any thread starts freeing.
    let site = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| frames(s)[0].0 == "cross_thread")
        .cloned()
        .expect("the cross_thread site");
    assert_eq!(site["allocs"], 400);
    assert_eq!(site["bytes"], 64 * 100 * (1 + 2 + 3 + 4));
    assert_eq!(site["frees"], 400);
    assert_eq!(site["live_bytes"], 0);
    assert_eq!(site["peak_live_bytes"], 64 * 100 * (1 + 2 + 3 + 4));
    assert!(v["user"]["free"]["calls"].as_i64().unwrap() >= 400);
}

/// C++: operator new/delete counted once each, their inner malloc/free not again.
///
/// With every kind of uprobe link: in a session the nested calls skip their return probe, and
/// operator new[]'s tail call into operator new must still end as one call.
#[test]
fn cxx_new_and_delete() {
    for links in ["session", "multi", "single"] {
        cxx_exactly(links);
    }
}

fn cxx_exactly(links: &str) {
    let w = build(
        "cxx",
        "cxx.cpp",
        &["g++", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let w = w.to_str().unwrap();
    let options = ["--uprobe-links", links];
    let (base, _) = trace_with(&options, &[w, "0"], &[]);
    let (run, _) = trace_with(&options, &[w, "5"], &[]);
    assert_eq!(
        calls(&run, "operator_new") - calls(&base, "operator_new"),
        5 * 4
    );
    assert_eq!(
        bytes(&run, "operator_new") - bytes(&base, "operator_new"),
        5 * (4 + 40 + 4 + 64)
    );
    let del = |v: &Value, k: &str| v["user"]["operator_delete"][k].as_i64().unwrap();
    assert_eq!(del(&run, "calls") - del(&base, "calls"), 5 * 4);
    assert_eq!(del(&run, "unknown"), 0);
    assert_eq!(
        calls(&run, "malloc"),
        calls(&base, "malloc"),
        "malloc inside new counted again"
    );
    assert_eq!(calls(&run, "aligned_alloc"), calls(&base, "aligned_alloc"));
    assert_eq!(run["user"]["free"]["calls"], base["user"]["free"]["calls"]);
    assert_eq!(
        run["user"]["live_bytes_at_end"],
        base["user"]["live_bytes_at_end"]
    );
    let site = run["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bytes"] == 5 * 40)
        .expect("the new int[10] site");
    assert_eq!(frames(site)[0].0, "pattern");
    assert!(
        run["user"]["allocator_files"]
            .to_string()
            .contains("libstdc++")
    );
}

/// Rust: its global allocator calls malloc and friends; sites resolve to demangled Rust
/// functions, inlined std frames included.
#[test]
fn rust_program() {
    let w = build(
        "rusty",
        "rusty.rs",
        &["rustc", "-O", "-g", "-C", "force-frame-pointers=yes"],
    );
    let w = w.to_str().unwrap();
    let (base, _) = trace_command(&[w, "0"]);
    let (run, _) = trace_command(&[w, "7"]);
    // Seven boxes of 1000 bytes and the Vec holding them (7 pointers).
    assert_eq!(calls(&run, "malloc") - calls(&base, "malloc"), 8);
    assert_eq!(
        bytes(&run, "malloc") - bytes(&base, "malloc"),
        7 * 1000 + 7 * 8
    );
    // The boxes leak (the leak check splits them by what reaches each: summed here).
    let boxes: Vec<&Value> = run["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["stack"].to_string().contains("make_boxes") && l["bytes"].as_u64() >= Some(1000)
        })
        .collect();
    let sum = |k: &str| boxes.iter().map(|l| l[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("count"), sum("bytes")), (7, 7000), "{boxes:?}");
    let leak = boxes[0].clone();
    let f = frames(&leak);
    assert!(
        f.iter()
            .any(|(func, file, _)| func.ends_with("make_boxes") && file == "rusty.rs"),
        "{f:?}"
    );
    assert!(
        f.iter().all(|(func, ..)| !func.starts_with("_ZN")),
        "mangled: {f:?}"
    );
    // Named by the program's own frame, past Rust's allocation glue.
    let label = label(&leak);
    assert!(label.starts_with("rusty::make_boxes"), "{label}: {f:?}");
}

/// The function of an entry's first frame that is not allocator plumbing.
fn label(entry: &Value) -> String {
    entry["stack"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["plumbing"] != true)
        .and_then(|f| f["function"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// C++: a vector grown by push_back is named by the function that pushed (libstdc++'s
/// allocator and `_M_realloc_insert` frames are plumbing); a program's own malloc wrapper is
/// plumbing once `--wrapper` names it.
#[test]
fn sites_are_named_by_the_frame_that_matters() {
    let w = build(
        "labels",
        "labels.cpp",
        &["g++", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let w = w.to_str().unwrap();
    let site = |v: &Value, allocs: i64| {
        v["user"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["allocs"] == allocs)
            .cloned()
            .unwrap_or_else(|| panic!("no site of {allocs} allocs: {:#}", v["user"]["sites"]))
    };
    let (v, _) = trace_with(&["--no-kernel"], &[w], &[]);
    // 1000 elements pushed: 11 reallocations (1, 2, 4, ..., 1024 elements).
    let vector = site(&v, 11);
    assert_eq!(label(&vector), "build_table");
    assert!(vector["stack"][0]["plumbing"] == true, "{vector:#}");
    assert_eq!(label(&site(&v, 50)), "pool_alloc(unsigned long)");
    let (v, out) = trace_with(&["--no-kernel", "--wrapper", "^pool_alloc$"], &[w], &[]);
    assert_eq!(label(&site(&v, 50)), "fill_pool");
    // The text names each site from that frame.
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    let row = |allocs: &str, stack: &str| {
        lines
            .windows(2)
            .any(|w| w[0].contains(allocs) && w[1].starts_with(stack))
    };
    assert!(
        row(" in 50 allocs, ", "      fill_pool (labels.cpp:"),
        "{text}"
    );
    assert!(
        row(" in 11 allocs, ", "      build_table (labels.cpp:"),
        "{text}"
    );
}

/// A library loaded with dlopen that then allocates: its call site resolves into the library,
/// also when the program dlclose'd it before the end.
#[test]
fn dlopened_library() {
    let lib = dl_lib();
    let main = build(
        "dl_main",
        "dl_main.c",
        &["cc", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let line = line_of("dl_lib.c", "/* LIB ALLOC */") as i64;
    for close in [&[][..], &["0", "close"]] {
        let argv: Vec<&str> = [main.to_str().unwrap(), lib.to_str().unwrap(), "9"]
            .into_iter()
            .chain(close.iter().copied())
            .collect();
        let (v, out) = trace_command(&argv);
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
        let site = v["user"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["bytes"] == 9 * 333)
            .cloned()
            .expect("the library's site");
        assert_eq!(site["allocs"], 9);
        let f = frames(&site);
        assert_eq!(
            f[0],
            ("lib_alloc".into(), "dl_lib.c".into(), line),
            "{argv:?}: {f:?}"
        );
        assert_eq!(f[1].0, "main");
        let module = site["stack"][0]["module"].as_str().unwrap();
        assert_eq!(module, lib.to_str().unwrap());
    }
}

/// `--pid` attached mid-run: frees of blocks allocated before attaching count as unknown.
#[test]
fn attach_mid_run_counts_earlier_blocks_as_unknown() {
    let w = workload("alloc");
    let v = trace_gated(&w, &["gate", "50", "20"], &["-q"], |_| {});
    assert_eq!(calls(&v, "malloc"), 20);
    assert_eq!(bytes(&v, "malloc"), 20 * 777);
    assert_eq!(
        v["user"]["free"],
        json!({"calls": 70, "unknown": 50, "null": 0})
    );
    assert_eq!(v["user"]["live_bytes_at_end"], 0);
    let site = &v["user"]["sites"][0];
    assert_eq!(frames(site)[0].0, "after_gate");
    assert_eq!(site["temporary"], 20);
}

/// A statically linked program: the allocator is found in the executable itself.
#[test]
fn statically_linked_program() {
    let w = build(
        "alloc-static",
        "alloc.c",
        &["cc", "-O1", "-g", "-static", "-pthread"],
    );
    let w = w.to_str().unwrap();
    let (base, _) = trace_command(&[w, "0"]);
    let (run, _) = trace_command(&[w, "2"]);
    assert_eq!(run["user"]["allocator_files"], json!([w]));
    assert_eq!(calls(&run, "malloc") - calls(&base, "malloc"), 2 * 4);
    assert_eq!(calls(&run, "realloc") - calls(&base, "realloc"), 2 * 3);
    assert_eq!(calls(&run, "valloc") - calls(&base, "valloc"), 2);
    let line = line_of("alloc.c", "/* LEAK */") as i64;
    let leak = leak_of(&run, 4242);
    assert_eq!(
        frames(&leak)[0],
        ("leak_here".into(), "alloc.c".into(), line)
    );
}

/// Another allocator exporting the standard names (jemalloc, preloaded) is found and probed.
#[test]
fn jemalloc_is_found() {
    const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        std::path::Path::new(JEMALLOC).exists(),
        "cargo xtask test installs libjemalloc2"
    );
    let w = workload("alloc");
    let (v, out) = trace_with(
        &[],
        &[w.to_str().unwrap(), "threads", "2", "50"],
        &[("LD_PRELOAD", JEMALLOC)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files = v["user"]["allocator_files"].as_array().unwrap();
    assert!(files.iter().any(|f| f == JEMALLOC), "{files:?}");
    let site = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| frames(s)[0].0 == "cross_thread")
        .cloned()
        .expect("the cross_thread site");
    assert_eq!(
        (site["allocs"].clone(), site["frees"].clone()),
        (json!(100), json!(100))
    );
    assert_eq!(site["bytes"], 64 * 50 * (1 + 2));
}

/// A library loaded with dlopen that brings its own allocator functions (libstdc++'s operator
/// new/delete, absent from the program) is probed once it is mapped. The program waits 1.5 s
/// after dlopen (room for a loaded machine): calls made before the probes are attached are not
/// seen.
#[test]
fn dlopen_brings_a_new_allocator() {
    let lib = build(
        "libdl_cxx.so",
        "dl_cxx.cpp",
        &["g++", "-O1", "-g", "-shared", "-fPIC"],
    );
    let main = build(
        "dl_main",
        "dl_main.c",
        &["cc", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let (v, out) = trace_command(&[main.to_str().unwrap(), lib.to_str().unwrap(), "6", "1500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(calls(&v, "operator_new"), 6);
    assert_eq!(bytes(&v, "operator_new"), 6 * 48);
    assert_eq!(v["user"]["operator_delete"]["calls"], 6);
    assert!(
        v["user"]["allocator_files"]
            .to_string()
            .contains("libstdc++")
    );
}

/// A program deleted (rebuilt, upgraded) while it runs is still symbolized: its file is kept
/// open through /proc/PID/map_files while the process lives.
#[test]
fn deleted_program_is_still_symbolized() {
    let built = workload("alloc");
    let copy = json_path("deleted-alloc").with_extension("bin");
    std::fs::copy(&built, &copy).unwrap();
    let v = trace_gated(&copy, &["gate", "5", "3"], &["-q"], |_| {
        std::fs::remove_file(&copy).unwrap();
    });
    assert_eq!(calls(&v, "malloc"), 3);
    let site = &v["user"]["sites"][0];
    let f = frames(site);
    assert_eq!(f[0].0, "after_gate", "{f:?}");
    assert_eq!(f[0].1, "alloc.c");
}

/// A statically linked program deleted before attaching: its allocator lives in the deleted
/// file, probed through the mapping; no call is missed and no false warning is given.
#[test]
fn deleted_static_program_is_still_probed() {
    let built = build(
        "alloc-static",
        "alloc.c",
        &["cc", "-O1", "-g", "-static", "-pthread"],
    );
    let copy = json_path("deleted-static").with_extension("bin");
    std::fs::copy(&built, &copy).unwrap();
    let v = trace_gated(&copy, &["gate", "5", "3"], &[], |_| {
        std::fs::remove_file(&copy).unwrap();
    });
    assert_eq!(
        calls(&v, "malloc"),
        3,
        "the allocator of a deleted file is probed"
    );
    assert_eq!(
        v["user"]["allocator_files"],
        json!([copy.to_str().unwrap()])
    );
    assert_eq!(frames(&v["user"]["sites"][0])[0].0, "after_gate");
}
