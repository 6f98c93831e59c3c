//! Root tests of the tracing modes against workloads with known answers.

use crate::support::*;
use serde_json::Value;

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The callers' totals of one field.
fn callers_sum(v: &Value, field: &str) -> i64 {
    v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| n(&c[field]))
        .sum()
}

/// `--mode kernel`: no uprobes, so no allocator call is seen, yet every memory syscall is,
/// exactly as in full mode, and each is charged to the stack that made it.
#[test]
fn kernel_mode_sees_every_syscall_without_uprobes() {
    let w = workload("syscalls");
    let w = w.to_str().unwrap();
    let kernel = |iterations: &str| trace_with(&["--mode", "kernel"], &[w, iterations], &[]).0;
    let (base, run) = (kernel("0"), kernel("3"));
    assert_eq!(run["mode"], "kernel");
    assert_eq!(
        run["user"]["malloc"]["calls"], 0,
        "no uprobes in kernel mode"
    );
    assert_eq!(run["user"]["allocator_files"], serde_json::json!([]));
    assert_eq!(
        delta(&run["syscalls"], &base["syscalls"]),
        syscalls_pattern(3, 1, true)
    );
    // Every call is charged to some stack (or to the stackless entry), and no call twice.
    for (calls, field) in [
        ("mmap", "mmap_calls"),
        ("munmap", "munmap_calls"),
        ("mremap", "mremap_calls"),
        ("brk", "brk_calls"),
    ] {
        assert_eq!(
            callers_sum(&run, field),
            n(&run["syscalls"][calls]["calls"]),
            "{field}"
        );
    }
    assert_eq!(
        callers_sum(&run, "brk_grow_bytes"),
        n(&run["syscalls"]["brk"]["grow_bytes"])
    );
    assert_eq!(
        callers_sum(&run, "brk_shrink_bytes"),
        n(&run["syscalls"]["brk"]["shrink_bytes"])
    );
    // Full mode probes the allocator, and says which mode it ran in too.
    let (full, _) = trace_command(&[w, "0"]);
    assert_eq!(full["mode"], "full");
    assert_ne!(full["user"]["allocator_files"], serde_json::json!([]));
}

/// `--fault-stacks`: every user page fault is charged to the stack that touched the page,
/// whose first frame is the touching code itself. `touch K` touches K pages of a direct mmap
/// in `touch`, then K pages of a malloc'd block in `touch_block`, whose first page malloc
/// already touched writing the chunk header.
#[test]
fn fault_stacks_name_the_code_that_touched_the_memory() {
    const K: i64 = 200;
    let w = workload("kernel");
    let (v, out) = trace_with(
        &["--mode", "kernel", "--fault-stacks"],
        &[w.to_str().unwrap(), "touch", &K.to_string()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Every fault has its stack, but for those whose walk failed, which are counted.
    let with_stack = callers_sum(&v, "page_faults");
    let faults = n(&v["kernel"]["faults"]["user"]);
    assert!(with_stack <= faults);
    assert!(
        faults - with_stack <= n(&v["events"]["stacks_lost"]),
        "{faults} faults, {with_stack} with a stack, {} stacks lost",
        v["events"]["stacks_lost"]
    );
    let faults_in = |function: &str| {
        let caller = v["callers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["stack"][0]["function"] == function)
            .unwrap_or_else(|| panic!("no caller in {function}: {}", v["callers"]));
        n(&caller["page_faults"])
    };
    assert_eq!(faults_in("touch"), K);
    assert_eq!(faults_in("touch_block"), K - 1);
    let text = stderr(&out);
    assert!(
        text.contains("allocator calls: not traced (--mode kernel"),
        "{text}"
    );
    assert!(
        text.contains("top callers of memory syscalls and faults"),
        "{text}"
    );

    // The HTML page says what the mode has, and lists the callers.
    let html = json_path("kernel-mode").with_extension("html");
    let out = tracer()
        .args(["-q", "--mode", "kernel", "--fault-stacks", "--html"])
        .arg(&html)
        .arg("--")
        .args([w.to_str().unwrap(), "touch", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Traced with <code>--mode kernel</code>"));
    assert!(page.contains("id=\"callers\""));
    assert!(page.contains("touch_block"), "the fault stacks are listed");

    // Without --fault-stacks, faults are counted by region only.
    let (v, _) = trace_with(
        &["--mode", "kernel"],
        &[w.to_str().unwrap(), "touch", "10"],
        &[],
    );
    assert_eq!(callers_sum(&v, "page_faults"), 0);
    assert!(n(&v["kernel"]["faults"]["user"]) >= 20);
}

/// Child processes are not traced, and the summary says how many there were; threads are
/// followed and not counted as children. In every mode.
#[test]
fn child_processes_are_counted_not_traced() {
    for mode in ["full", "kernel"] {
        let (v, out) = trace_with(
            &["--mode", mode, "--no-kernel"],
            &["sh", "-c", "/bin/true & /bin/true & /bin/true & wait"],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(v["events"]["child_processes"], 3, "{mode}");
        assert!(
            stderr(&out).contains("created 3 child processes, which were not traced"),
            "{}",
            stderr(&out)
        );
    }
    let w = workload("syscalls");
    let (v, out) = trace_with(
        &["--no-kernel"],
        &[w.to_str().unwrap(), "1", "--threads", "4"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        v["events"]["child_processes"], 0,
        "threads are not children"
    );
    assert!(!stderr(&out).contains("child process"));
}
