//! Root tests of the stack walks: whole stacks through code built without frame pointers
//! (unwind tables compiled from .eh_frame, walked in the kernel), on a workload and on a
//! distribution binary, and frame-pointer walks that stop short but never report a frame that
//! is not one.

use crate::support::*;
use serde_json::Value;

/// The GNU build id of `path`, as `readelf -n` prints it.
fn build_id_of(path: &str) -> String {
    let out = std::process::Command::new("readelf")
        .args(["-n", path])
        .output()
        .expect("readelf (binutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{path} has no build id"))
}

/// The functions of a site's stack, innermost first (`?` where a frame has no symbol).
fn functions(site: &Value) -> Vec<String> {
    site["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Built `-O2 -fomit-frame-pointer`, a running program's stacks are whole, from the caller
/// through `main` into libc's start, walked with the files' unwind tables (the default); with
/// `--stacks fp` they end at the direct caller.
#[test]
fn whole_stacks_without_frame_pointers() {
    let w = build(
        "alloc-nofp",
        "alloc.c",
        &["cc", "-O2", "-g", "-fomit-frame-pointer", "-pthread"],
    );
    let chain = |stacks: &str| -> Vec<String> {
        let v = trace_gated(
            &w,
            &["gate", "5", "20"],
            &["--no-kernel", "--stacks", stacks],
            |_| {},
        );
        // The unwinder's programs load for session links like the others: a refused program
        // (one with callbacks needs its BTF func_info) would fall back to slow single uprobes.
        assert_eq!(v["user"]["uprobe_links"], "session", "--stacks {stacks}");
        let site = v["user"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["allocs"] == 20 && s["bytes"] == 20 * 777)
            .cloned()
            .unwrap_or_else(|| panic!("no site of 20 x 777 bytes: {:#}", v["user"]["sites"]));
        functions(&site)
    };
    let walked = chain("dwarf");
    assert!(
        walked.starts_with(&[
            "after_gate".to_string(),
            "main".into(),
            "__libc_start_call_main".into()
        ]),
        "{walked:?}"
    );
    let short = chain("fp");
    assert_eq!(short[0], "after_gate");
    assert!(!short.iter().any(|f| f == "main"), "{short:?}");
}

/// A library built without frame pointers, loaded with dlopen by a program built without them
/// either: the process is held at the library's mapping while its unwind table is compiled
/// (off the event path), so that even its first allocation has the whole stack, through the
/// library's frames and `main` into libc. Every allocation is one site. The library carries 20,000 more
/// functions (tens of milliseconds to compile, far longer than dlopen takes to call in), so a
/// process let go before its table is in would show a first allocation cut short.
#[test]
fn a_dlopened_library_is_unwound_from_its_first_call() {
    let padding = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dl_deep_padding.s");
    let mut asm = String::from(".text\n");
    for i in 0..20_000 {
        asm.push_str(&format!(
            ".globl pad_{i}\n.type pad_{i},@function\npad_{i}:\n.cfi_startproc\npush %rbx\n\
             .cfi_adjust_cfa_offset 8\npop %rbx\n.cfi_adjust_cfa_offset -8\nret\n.cfi_endproc\n"
        ));
    }
    asm.push_str(".section .note.GNU-stack,\"\",@progbits\n");
    std::fs::write(&padding, asm).unwrap();
    let lib = build(
        "libdl_deep.so",
        "dl_deep.c",
        &[
            "cc",
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-shared",
            "-fPIC",
            padding.to_str().unwrap(),
        ],
    );
    let main = build(
        "dl_main-nofp",
        "dl_main.c",
        &["cc", "-O2", "-g", "-fomit-frame-pointer"],
    );
    let (v, out) = trace_command(&[main.to_str().unwrap(), lib.to_str().unwrap(), "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sites: Vec<&Value> = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stack"][0]["function"] == "lib_leaf")
        .collect();
    assert_eq!(sites.len(), 1, "{sites:#?}");
    assert_eq!(
        (sites[0]["allocs"].as_u64(), sites[0]["bytes"].as_u64()),
        (Some(7), Some(7 * 444))
    );
    let walked = functions(sites[0]);
    assert!(
        walked.starts_with(&[
            "lib_leaf".to_string(),
            "lib_middle".into(),
            "lib_alloc".into(),
            "main".into(),
            "__libc_start_call_main".into(),
        ]),
        "{walked:?}"
    );
    let line = line_of("dl_deep.c", "/* DEEP ALLOC */");
    assert_eq!(sites[0]["stack"][0]["line"].as_u64(), Some(line));
}

/// Debian's own sqlite3 (built without frame pointers, its code in libsqlite3.so.0) building an
/// indexed table: the stacks of its top sites go through libsqlite3 and the CLI into libc's
/// start, and every frame lies in a file the process mapped, named with its build id. By frame
/// pointer the same sites are a frame or two deep, and still only real frames. In `--mode
/// kernel` the syscalls' stacks are whole as well.
#[test]
fn debian_sqlite3_stacks_reach_main() {
    let sql = "create table t(a, b); \
               with recursive c(x) as (select 1 union all select x + 1 from c limit 20000) \
               insert into t select x, randomblob(100) from c; \
               create index i on t(b); select count(*) from t;";
    let top_sites = |stacks: &str| -> Vec<Value> {
        let (v, out) = trace_with(
            &["--no-kernel", "--stacks", stacks],
            &["sqlite3", ":memory:", sql],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "20000");
        let mut sites = v["user"]["sites"].as_array().unwrap().clone();
        sites.sort_by_key(|s| std::cmp::Reverse(s["bytes"].as_i64().unwrap()));
        sites.truncate(5);
        for site in &sites {
            for frame in site["stack"].as_array().unwrap() {
                let module = frame["module"].as_str().unwrap_or_else(|| {
                    panic!("--stacks {stacks}: a frame outside any mapped file: {site:#}")
                });
                assert!(frame["offset"].is_u64(), "{frame}");
                // Each module names its build id, as readelf reads it.
                assert_eq!(
                    frame["build_id"].as_str(),
                    Some(build_id_of(module).as_str()),
                    "{frame}"
                );
                let file = module.rsplit('/').next().unwrap();
                assert!(
                    [
                        "sqlite3",
                        "libsqlite3.so.0",
                        "libc.so.6",
                        "libreadline.so.8"
                    ]
                    .contains(&file),
                    "--stacks {stacks}: a frame in {module}: {site:#}"
                );
            }
        }
        sites
    };
    for site in top_sites("dwarf") {
        let stack = functions(&site);
        assert!(
            stack.iter().any(|f| f == "sqlite3_step")
                && stack.iter().any(|f| f == "__libc_start_call_main"),
            "{stack:?}"
        );
        // Past main (in the stripped CLI) into libc and back to the CLI's _start.
        let modules: Vec<&str> = site["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["module"].as_str())
            .collect();
        assert!(modules.last().unwrap().ends_with("/sqlite3"), "{modules:?}");
    }
    for site in top_sites("fp") {
        assert!(functions(&site).len() <= 2, "{site:#}");
    }

    // `--mode kernel`, no uprobes: the stacks of the syscalls, walked from the registers the
    // thread entered the kernel with, are whole too: the brk that grew the heap most was made
    // by a malloc under sqlite3_step, under main.
    let (v, out) = trace_with(&["--mode", "kernel"], &["sqlite3", ":memory:", sql], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let callers = v["callers"].as_array().unwrap();
    let grew = callers
        .iter()
        .max_by_key(|c| c["brk_grow_bytes"].as_i64().unwrap())
        .unwrap();
    assert!(
        grew["brk_grow_bytes"].as_i64().unwrap() > 1 << 20,
        "{grew:#}"
    );
    let stack = functions(grew);
    assert!(
        stack.iter().any(|f| f == "sqlite3_step")
            && stack.iter().any(|f| f == "__libc_start_call_main"),
        "{stack:?}"
    );
}

/// A stack deeper than the unwinder's 64 frames is cut there and counted, said in the summary;
/// one that fits is not.
#[test]
fn stacks_deeper_than_the_limit_are_counted() {
    let w = build(
        "bench",
        "bench.c",
        &["cc", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let run = |depth: &str| {
        let (v, out) = trace_with(
            &["--no-kernel"],
            &[w.to_str().unwrap(), "50", depth, "1"],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        (v, stderr(&out))
    };
    let (v, text) = run("100");
    let site = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["allocs"] == 50)
        .cloned()
        .expect("the loop's site");
    // The 64 return addresses walked (where the walk started, inside malloc, is not a frame
    // of the site).
    let frames = site["stack"].as_array().unwrap();
    assert_eq!(frames.iter().filter(|f| f["inlined"] != true).count(), 64);
    assert!(functions(&site).iter().filter(|f| *f == "deep").count() >= 60);
    // Each allocation's walk, and those of the syscalls the first malloc made down there (the
    // heap's first brk).
    let truncated = v["events"]["stacks_truncated"].as_u64().unwrap();
    assert!((50..=54).contains(&truncated), "{:#}", v["events"]);
    // The site says its own stack was cut (it is short of main), and the note counts sites.
    assert_eq!(site["stack_cut"], true, "{site:#}");
    assert!(
        text.contains("note: 1 site's stack was deeper than 64 frames: cut there"),
        "{text}"
    );
    assert!(text.contains("  [stack cut]"), "{text}");
    let (v, text) = run("10");
    assert!(
        v["events"].get("stacks_truncated").is_none(),
        "{:#}",
        v["events"]
    );
    assert!(!text.contains("deeper than 64"), "{text}");
}

/// A full stack map loses stacks, never fills them in by frame pointer: 1,024 distinct stacks
/// into a map of 64 leave sites that say `stack_lost` and show their calling frame only, the
/// others whole to main; the loss is counted and said.
#[test]
fn a_full_stack_map_loses_stacks_and_says_so() {
    let w = workload("many_sites");
    let (v, out) = trace_with(
        &["--no-kernel", "--max-stacks", "64", "--max-sites", "2000"],
        &[w.to_str().unwrap(), "10", "1"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sites = v["user"]["sites"].as_array().unwrap();
    let (lost, whole): (Vec<&Value>, Vec<&Value>) =
        sites.iter().partition(|s| s["stack_lost"] == true);
    assert!(!lost.is_empty() && !whole.is_empty(), "{} lost", lost.len());
    for s in &lost {
        assert_eq!(functions(s), ["leaf"], "{s:#}");
    }
    for s in whole.iter().filter(|s| functions(s)[0] == "leaf") {
        assert!(functions(s).iter().any(|f| f == "main"), "{s:#}");
    }
    let full = v["events"]["unwound_map_full"].as_u64().unwrap_or(0);
    assert!(full > 0, "{:#}", v["events"]);
    assert!(stderr(&out).contains("found their map full and were not kept"));
}

/// Distinct call sites in a stripped library stay distinct, each with its own return address
/// and its own count: on Debian's sqlite3, the allocations tracer saw from each return address
/// in libsqlite3.so.0 (the direct callers of malloc and realloc, summed over every site) equal
/// bpftrace's count of returns to that address (a uprobe on it; bpftrace is independent of
/// tracer's probes and stacks).
#[test]
fn stripped_call_sites_count_as_bpftrace_counts_their_return_addresses() {
    use std::collections::BTreeMap;
    let sql = "create table t(a integer primary key, b text); \
               with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000) \
               insert into t select x, printf('row %d', x) from c; \
               select count(*) from t where b like '%7%'; create index tb on t(b);";
    let (v, out) = trace_with(
        &["--no-kernel", "--max-sites", "100000"],
        &["sqlite3", ":memory:", sql],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut ours: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for site in v["user"]["sites"].as_array().unwrap() {
        let f = &site["stack"][0];
        let module = f["module"].as_str().unwrap_or_default();
        if module.contains("libsqlite3") {
            *ours
                .entry((module.to_string(), f["offset"].as_u64().unwrap()))
                .or_default() += site["allocs"].as_u64().unwrap();
        }
    }
    assert!(ours.len() >= 2, "distinct return addresses: {ours:?}");
    // The same command under bpftrace, one uprobe on each return address (stripped code:
    // bpftrace cannot check the boundary itself, hence --unsafe; they are return addresses).
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let (script, sql_file) = (dir.join("sqlite-run.sh"), dir.join("sqlite-run.sql"));
    std::fs::write(&sql_file, sql).unwrap();
    std::fs::write(
        &script,
        format!(
            "exec sqlite3 :memory: < {} > /dev/null\n",
            sql_file.display()
        ),
    )
    .unwrap();
    let probes: Vec<String> = ours
        .keys()
        .map(|(module, offset)| format!("uprobe:{module}:{offset:#x}"))
        .collect();
    let program = format!(
        "{} /pid == cpid/ {{ @[probe] = count(); }}",
        probes.join(", ")
    );
    let out = std::process::Command::new("bpftrace")
        .args(["--unsafe", "-e", &program, "-c"])
        .arg(format!("/bin/sh {}", script.display()))
        .output()
        .expect("bpftrace (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut theirs: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for line in text.lines() {
        // @[uprobe:/lib/x86_64-linux-gnu/libsqlite3.so.0:685316]: 41208
        let Some(rest) = line.strip_prefix("@[uprobe:") else {
            continue;
        };
        let (probe, count) = rest.split_once("]: ").unwrap();
        let (module, offset) = probe.rsplit_once(':').unwrap();
        theirs.insert(
            (module.to_string(), offset.parse().unwrap()),
            count.trim().parse().unwrap(),
        );
    }
    assert_eq!(ours, theirs, "bpftrace said:\n{text}\n{}", stderr(&out));
}

/// A frame-pointer walk ends where frame pointers end: through Debian's python3 (built without
/// them) some walks leave real frames, and each is ended at the first return address that
/// follows no call, counted and said; every frame shown after the first follows a call, as
/// binutils' own disassembler decodes the bytes before it. Through code that keeps frame
/// pointers nothing is ended.
#[test]
fn frame_pointer_walks_end_where_frame_pointers_end() {
    let (v, out) = trace_with(
        &["--no-kernel", "--stacks", "fp", "--max-sites", "100000"],
        &["/usr/bin/python3", "-c", "import json, decimal, email"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ended = v["events"]["fp_stacks_ended"].as_u64().unwrap_or(0);
    assert!(ended > 0, "{}", v["events"]);
    assert!(
        v["notes"].to_string().contains("ended early"),
        "{}",
        v["notes"]
    );
    // Every return address shown (past the caller's frame, which tracer reads itself) ends a
    // call, as objdump decodes it.
    let mut frames: std::collections::BTreeSet<(String, u64)> = Default::default();
    for site in v["user"]["sites"].as_array().unwrap() {
        for f in site["stack"].as_array().unwrap().iter().skip(1) {
            if let (Some(m), Some(o)) = (f["module"].as_str(), f["offset"].as_u64()) {
                frames.insert((m.to_string(), o));
            }
        }
    }
    assert!(!frames.is_empty());
    for (module, offset) in frames.iter().take(60) {
        assert!(
            objdump_call_before(module, *offset),
            "{module}+{offset:#x} follows no call"
        );
    }
    // A program that keeps frame pointers: nothing ended.
    let demo = workload("demo");
    let (v, out) = trace_with(
        &["--no-kernel", "--stacks", "fp"],
        &[demo.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(v["events"]["fp_stacks_ended"].is_null(), "{}", v["events"]);
}

/// Whether objdump decodes the bytes just before file offset `offset` of `module` as one call
/// instruction ending there (each length a call can have is tried).
fn objdump_call_before(module: &str, offset: u64) -> bool {
    let segments = std::process::Command::new("readelf")
        .args(["-lW", module])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&segments.stdout);
    // LOAD  offset vaddr paddr filesz ...
    let vaddr = text
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .filter_map(|l| {
            let w: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(4)
                .filter_map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok())
                .collect();
            (w.len() == 4 && offset > w[0] && offset <= w[0] + w[3]).then(|| offset - w[0] + w[1])
        })
        .next();
    let Some(vaddr) = vaddr else {
        return false;
    };
    (2..=7).any(|k| {
        let out = std::process::Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(format!("--start-address={:#x}", vaddr - k))
            .arg(format!("--stop-address={vaddr:#x}"))
            .arg(module)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let insns: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.trim_start()
                    .split(':')
                    .next()
                    .is_some_and(|a| u64::from_str_radix(a.trim(), 16).is_ok())
                    && l.contains(":\t")
            })
            .collect();
        insns.len() == 1 && insns[0].contains("call")
    })
}

/// The unwinder's caches (rows by address in front of the table search, a window of the stack
/// read at once) change no stack: workloads/deep_stacks.c, built without frame pointers, on 4
/// threads, gives the same sites with and without them (`--no-unwind-cache`), and each is the
/// one the workload made: a recursion of every depth from 1 to 40, one function called at the
/// same stack depth by two callers (whose frames are never mixed up), and callbacks through a
/// table of pointers.
#[test]
fn unwinder_caches_change_no_stack() {
    let w = build(
        "deep_stacks",
        "deep_stacks.c",
        &["cc", "-O2", "-g", "-fomit-frame-pointer", "-pthread"],
    );
    let (threads, rounds) = (4u64, 100u64);
    let calls = threads * rounds;
    let run = |options: &[&str]| {
        let mut all = vec!["--no-kernel", "--costs"];
        all.extend_from_slice(options);
        let (v, out) = trace_with(
            &all,
            &[
                w.to_str().unwrap(),
                &threads.to_string(),
                &rounds.to_string(),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        v
    };
    let sites = |v: &Value| -> Vec<(u64, u64, Vec<String>)> {
        let mut s: Vec<_> = v["user"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let frames = s["stack"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| format!("{}+{}@{}", f["function"], f["offset"], f["module"]))
                    .collect();
                (
                    s["allocs"].as_u64().unwrap(),
                    s["bytes"].as_u64().unwrap(),
                    frames,
                )
            })
            .collect();
        s.sort();
        s
    };
    let cached = run(&[]);
    let uncached = run(&["--no-unwind-cache"]);
    let (a, b) = (sites(&cached), sites(&uncached));
    let only = |x: &[(u64, u64, Vec<String>)], y: &[(u64, u64, Vec<String>)]| {
        x.iter()
            .filter(|s| !y.contains(s))
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        a == b,
        "{} sites with the caches, {} without; only with: {:?}; only without: {:?}",
        a.len(),
        b.len(),
        only(&a, &b),
        only(&b, &a)
    );
    // The caches were used, and only when asked for.
    let hits = |v: &Value| v["costs"]["unwinder"]["row_cache_hits"].as_f64().unwrap();
    assert!(hits(&cached) > 0.9, "{:#}", cached["costs"]);
    assert_eq!(hits(&uncached), 0.0, "{:#}", uncached["costs"]);
    // Each site is the workload's own.
    let site = |bytes: u64| {
        cached["user"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["allocs"] == calls && s["bytes"] == bytes * calls)
            .map_or_else(|| panic!("no site of {calls} x {bytes} B"), functions)
    };
    for depth in 1..=40usize {
        let stack = site(16 * depth as u64);
        assert!(
            stack[..depth].iter().all(|f| f == "rec")
                && stack[depth..].starts_with(&["work".into(), "start_thread".into()]),
            "depth {depth}: {stack:?}"
        );
    }
    assert!(site(24).starts_with(&["leaf".into(), "via_a".into(), "work".into()]));
    assert!(site(40).starts_with(&["leaf".into(), "via_b".into(), "work".into()]));
    for (bytes, callback) in [(50, "cb_one"), (58, "cb_two"), (66, "cb_three")] {
        assert!(
            site(bytes).starts_with(&[callback.into(), "work".into()]),
            "{:?}",
            site(bytes)
        );
    }
}

/// Without --max-stacks the map is sized from the target's code: a stack per 256 bytes of its
/// executable segments, from 65,536. GCC's cc1plus (about 26 MiB of code) gets twice what a
/// small C program gets (--max-stacks, which overrides it, is tried in the test above).
#[test]
fn the_stack_map_is_sized_from_the_targets_code() {
    let stacks = |args: &[&str]| -> u64 {
        let out = tracer().args(["-v", "-q"]).args(args).output().unwrap();
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("stack map: "))
            .unwrap_or_else(|| panic!("no stack map line in {err}"));
        line.split("stack map: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let small = workload("alloc");
    assert_eq!(stacks(&["--", small.to_str().unwrap()]), 65_536);
    let gxx = std::process::Command::new("g++")
        .arg("-print-prog-name=cc1plus")
        .output()
        .unwrap();
    let cc1plus = String::from_utf8(gxx.stdout).unwrap().trim().to_string();
    let code = tracer::process::target::code::code_bytes(
        std::path::Path::new("/"),
        &[cc1plus.clone().into()],
    );
    assert!(code > 16 << 20, "cc1plus has {code} bytes of code");
    let expected = u64::from(tracer::process::target::code::stacks_for_code(code));
    assert!(expected >= 131_072, "{expected}");
    assert_eq!(stacks(&["--", &cc1plus, "--version"]), expected);
}
