//! Tests of the text summary.

use super::*;
use crate::summary::{
    label::{Frame, stack as describe_stack},
    tests::sample_summary,
    user::SiteReport,
};

/// The text of `s`, its notes made from its counts as the summary's builder makes them (the
/// tests change the counts after).
fn rendered(s: &Summary) -> String {
    let mut s = s.clone();
    s.notes = crate::summary::notes::of(&s);
    let mut buf = Vec::new();
    render(&s, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

/// `text` with the lines [`fit`](crate::report::fit) wrapped joined again: a line indented
/// at least four deeper than the one before continues it.
fn joined(text: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut out = String::new();
    let mut last = 0;
    for line in text.lines() {
        if !out.is_empty() && !line.trim().is_empty() && indent(line) >= last + 4 {
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
            last = indent(line);
        }
    }
    out.push('\n');
    out
}

#[test]
fn shows_target_events_and_each_syscall() {
    let text = rendered(&sample_summary());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "tracer: pid 4242 (./app --flag) exited with status 3; traced 12.5 ms"
    );
    assert_eq!(lines[1], "events: 6 received, 2 dropped");
    assert!(
        lines[2].starts_with("warning: 2 events were lost"),
        "{}",
        lines[2]
    );
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
    };
    assert_eq!(
        row("brk"),
        "brk             2       0  grew 132.0 KiB, shrank 0 B (1 query)"
    );
    assert!(row("mmap").starts_with("mmap            2       0  200.0 KiB mapped: anonymous 196.0 KiB in 1 call, file 4.0 KiB in 1 call"), "{}", row("mmap"));
    // A syscall never made has no row of zeros.
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("mprotect") || l.starts_with("madvise")),
        "{text}"
    );
    assert_eq!(
        row("munmap"),
        "munmap          1       0  196.0 KiB unmapped"
    );
    assert_eq!(
        row("mremap"),
        "mremap          1       0  4.0 KiB -> 8.0 KiB"
    );
}

#[test]
fn stacks_read_innermost_first() {
    let frame = |f: Option<&str>, file: Option<&str>, line| Frame {
        addr: 0x4010,
        function: f.map(Into::into),
        file: file.map(Into::into),
        line,
        inlined: false,
        module: None,
        offset: None,
        build_id: None,
        plumbing: false,
    };
    let stack = [
        frame(Some("leak_here"), Some("/src/app/alloc.c"), Some(49)),
        frame(Some("main"), None, None),
        frame(None, None, None),
        frame(Some("_start"), None, None),
    ];
    assert_eq!(
        describe_stack(&stack, 3),
        "leak_here (alloc.c:49) <- main <- 0x4010"
    );
    assert_eq!(describe_stack(&[], 3), "(no stack)");
    // Unresolved in a mapped file: the file and the offset in it, never a bare address.
    let mut lib = frame(None, None, None);
    lib.module = Some("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0".into());
    lib.offset = Some(0x4a2f1);
    assert_eq!(
        describe_stack(&[stack[1].clone(), lib], 3),
        "main <- libsqlite3.so.0+0x4a2f1"
    );
}

#[test]
fn without_an_allocator_says_so() {
    let text = rendered(&sample_summary());
    assert!(text.contains("allocator: no malloc family found"), "{text}");
}

#[test]
fn names_the_processes_started_before_attaching() {
    let mut s = sample_summary();
    assert!(!rendered(&s).contains("before tracer attached"));
    s.target.pid = 40;
    s.target.children_at_attach = vec![41];
    assert!(
        joined(&rendered(&s)).contains(
            "note: pid 40 had started 1 process before tracer attached (pid 41): it is not \
             traced (--follow follows the processes created while tracing; trace one of \
             these with its own --pid)\n"
        ),
        "{}",
        rendered(&s)
    );
    s.target.children_at_attach = (41..51).collect();
    let text = joined(&rendered(&s));
    assert!(
        text.contains(
            "had started 10 processes before tracer attached (pid 41, 42, 43, 44, 45, 46, \
             47, 48, and 2 more): they are not traced"
        ),
        "{text}"
    );
}

#[test]
fn warns_of_lost_stacks() {
    let mut s = sample_summary();
    s.events.stacks_lost = 7;
    let text = joined(&rendered(&s));
    assert!(
        text.contains(
            "warning: 7 stacks (of allocations, syscalls or faults) could not be taken: \
             7 could not be walked\n"
        ),
        "{text}"
    );
    // Collisions and a full map are told apart, and only they suggest a larger map.
    s.events.stack_collisions = 4;
    s.events.stack_map_full = 1;
    let text = joined(&rendered(&s));
    assert!(
        text.contains(
            "could not be taken: 4 hashed to the slot of another stack in the stack map, \
             1 found the stack map full, 2 could not be walked; a larger --max-stacks \
             makes both rarer"
        ),
        "{text}"
    );
}

#[test]
fn says_when_unwound_stacks_were_cut_or_walked_again() {
    let mut s = sample_summary();
    let text = rendered(&s);
    assert!(!text.contains("deeper than 64") && !text.contains("hashed to another"));
    // The unwinder's count alone says nothing of a site: a stack as deep as it walks that
    // reached its entry point is whole. The sites whose own stack was cut are said, and marked.
    s.events.stacks_truncated = 3;
    s.events.unwound_collisions = 2;
    s.events.unwound_map_full = 5;
    assert!(!rendered(&s).contains("deeper than 64"));
    s.user.allocator_files = vec!["/lib/libc.so.6".into()];
    let mut deep = crate::summary::tests::site_at("deep", 3, Default::default());
    deep.marks.stack_cut = true;
    s.user.sites.push(deep);
    let text = joined(&rendered(&s));
    assert!(
        text.contains("note: 1 site's stack was deeper than 64 frames: cut there"),
        "{text}"
    );
    let text = rendered(&s);
    assert!(
        text.contains("\n      deep (app.c:3)  [stack cut]\n"),
        "{text}"
    );
    assert!(
        text.contains("note: 2 unwound stacks hashed to another stack's id"),
        "{text}"
    );
    assert!(
        text.contains("note: 5 unwound stacks found their map full"),
        "{text}"
    );
}

#[test]
fn no_warning_without_drops() {
    let mut s = sample_summary();
    s.events.dropped = 0;
    assert!(!rendered(&s).contains("warning"));
}

/// Sites are named from their first frame that is not plumbing, with as many frames as
/// tell them apart; `--max-sites` lists that many.
#[test]
fn sites_show_the_frames_that_tell_them_apart() {
    let f = |function: &str, plumbing: bool| Frame {
        function: Some(function.into()),
        plumbing,
        ..Frame::unknown(0x1000)
    };
    let stack = |tail: &[&str]| {
        let mut s = vec![f("alloc::alloc::alloc", true), f("grow", false)];
        s.extend(tail.iter().map(|t| f(t, false)));
        s
    };
    let mut s = sample_summary();
    s.user.allocator_files = vec!["/lib/libc.so.6".into()];
    let stats = crate::aggregate::heap::SiteStats {
        allocs: 1,
        bytes: 10,
        ..Default::default()
    };
    for tail in [
        &["a", "b", "one", "main"][..],
        &["a", "b", "two", "main"][..],
        &["c"][..],
    ] {
        s.user.sites.push(SiteReport {
            stack: stack(tail).into(),
            ..crate::summary::tests::site_at("x", 1, stats.clone())
        });
    }
    for i in 0..12 {
        s.user.sites.push(crate::summary::tests::site_at(
            &format!("f{i}"),
            i,
            stats.clone(),
        ));
    }
    let text = rendered(&s);
    assert!(
        text.contains(" live\n      grow <- a <- b <- one\n"),
        "{text}"
    );
    assert!(
        text.contains(" live\n      grow <- a <- b <- two\n"),
        "{text}"
    );
    assert!(text.contains(" live\n      grow <- c\n"), "{text}");
    assert!(!text.contains("alloc::alloc::alloc"), "{text}");
    let listed = |text: &str| text.lines().filter(|l| l.contains(" in 1 alloc, ")).count();
    assert_eq!(listed(&text), 10);
    s.text_sites = Some(15);
    assert_eq!(listed(&rendered(&s)), 15);
}

/// What matters first: findings, then the sites and leaks, then where the memory came from,
/// the allocator's calls and the syscalls; every line at most 100 characters, whatever the
/// frames' names; a grouped finding names its other sites once.
#[test]
fn most_important_first_in_100_columns() {
    use crate::summary::findings::{AlsoSite, Finding, FindingKind};
    let mut s = sample_summary();
    s.user.allocator_files = vec!["/lib/libc.so.6".into()];
    let long = format!(
        "std::vector<std::map<{}, int>>::_M_realloc_insert",
        "x".repeat(300)
    );
    let mut site = crate::summary::tests::site_at(&long, 7, Default::default());
    site.stats.allocs = 3;
    s.user.sites.push(site.clone());
    let other = crate::summary::tests::site_at("other", 9, Default::default());
    s.findings.push(Finding {
        kind: FindingKind::Leak,
        severity: "medium",
        bytes: 3 << 20,
        site: site.stack.clone(),
        evidence: serde_json::Value::Null,
        message: format!("{long} left 1.0 MiB in 3 blocks allocated at the end."),
        suggestion: "Free them.".into(),
        also: vec![AlsoSite {
            site: other.stack.clone(),
            bytes: 1 << 20,
        }],
        more: 7,
        pid: None,
        peak: 0,
    });
    let text = rendered(&s);
    let wide: Vec<&str> = text.lines().filter(|l| l.chars().count() > 100).collect();
    assert!(wide.is_empty(), "{wide:#?}");
    let at = |what: &str| {
        text.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in {text}"))
    };
    let order = [
        at("findings (most at stake first):"),
        at("top call sites by bytes"),
        at("memory path"),
        at("allocator calls"),
        at("syscall "),
    ];
    assert!(order.is_sorted(), "{order:?} in {text}");
    assert!(
        text.contains("      also: other (app.c:9) 1.0 MiB and 7 more sites\n"),
        "{text}"
    );
    assert!(text.contains("…"), "{text}");
}

/// `--mode kernel` says what it knows: no table of per-site paths (all zeros without
/// allocator calls) beside the kernel's counts, and live bytes unknown, not 0 B.
#[test]
fn kernel_mode_shows_no_table_of_zeros() {
    let mut s = sample_summary();
    assert!(rendered(&s).contains("memory path"));
    assert_eq!(s.live_bytes_now(), Some(s.user.live_bytes_at_end));
    s.mode = "kernel".into();
    let text = rendered(&s);
    assert!(!text.contains("memory path"), "{text}");
    assert!(text.contains("syscall "), "{text}");
    assert_eq!(s.live_bytes_now(), None);
    assert_eq!(label::known_bytes(s.live_bytes_now()), "unknown");
}

/// Two sites whose stacks part only at the 21st frame are shown to the 21st: no two listed
/// sites read alike.
#[test]
fn no_two_sites_read_alike() {
    let mut s = sample_summary();
    s.user.allocator_files = vec!["/lib/libc.so.6".into()];
    for outer in ["left", "right"] {
        let mut frames: Vec<Frame> = (0..20)
            .map(|i| Frame {
                function: Some(format!("f{i}").into()),
                ..Frame::unknown(0x1000 + i)
            })
            .collect();
        frames.push(Frame {
            function: Some(outer.into()),
            ..Frame::unknown(0x9000)
        });
        s.user.sites.push(SiteReport {
            stack: frames.into(),
            ..crate::summary::tests::site_at("x", 1, Default::default())
        });
    }
    let text = joined(&rendered(&s));
    assert!(text.contains("<- f19 <- left"), "{text}");
    assert!(text.contains("<- f19 <- right"), "{text}");
}

/// `--costs`: the probes' total and tracer's CPU, the walks' cost a frame, a line a program,
/// costliest first; nothing without `--costs`.
#[test]
fn costs_are_said_last() {
    use crate::summary::costs::{Costs, ProbeLine, Unwinder};
    let mut s = sample_summary();
    assert!(!rendered(&s).contains("costs:"));
    s.costs = Some(Costs {
        probes: vec![
            ProbeLine {
                program: "alloc_session".into(),
                runs: 4,
                ns_per_run: 750_000.0,
                total_ms: 3.0,
            },
            ProbeLine {
                program: "free_enter".into(),
                runs: 2,
                ns_per_run: 500_000.0,
                total_ms: 1.0,
            },
        ],
        probes_ms: 4.0,
        unwinder: Some(Unwinder {
            walks: 10,
            frames: 200,
            ms: 0.008,
            ns_per_frame: 40.0,
            ns_per_walk: 800.0,
            row_cache_hits: 0.75,
        }),
        tracer_cpu_ms: 12.5,
    });
    let text = joined(&rendered(&s));
    let at = text.find("costs: the probes ran 6 times for 4.0 ms in all; tracer's own CPU 12.5 ms");
    assert!(at.is_some(), "{text}");
    let rest = &text[at.unwrap()..];
    assert!(
        rest.contains(
            "stack walks: 10 of 20.0 frames on average, 40.0 ns a frame (800 ns a walk, 75% of \
             frames' rows from the cache)"
        ),
        "{rest}"
    );
    let session = rest.find("alloc_session").unwrap();
    let free = rest.find("free_enter").unwrap();
    assert!(session < free, "{rest}");
}
