//! Root tests: the real eBPF programs against workloads whose syscalls are known exactly.

use std::process::{Command, Stdio};

use crate::support::*;
use serde_json::Value;

/// Program start-up (the dynamic loader, libc) makes its own calls; running the workload with
/// zero iterations measures them, so the difference is exactly the pattern.
#[test]
fn launched_command_reports_exact_syscalls_and_exit_code() {
    let w = workload("syscalls");
    let w = w.to_str().unwrap();
    let (base, out) = trace_command(&[w, "0", "--exit", "7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "tracer exits with the command's status"
    );
    let (run, _) = trace_command(&[w, "3", "--exit", "7"]);
    assert_eq!(run["target"]["exit_code"], 7);
    assert_eq!(run["target"]["command"][1], "3");
    assert_eq!(run["events"]["dropped"], 0);
    assert_eq!(
        delta(&run["syscalls"], &base["syscalls"]),
        syscalls_pattern(3, 1, true)
    );
    // Start-up itself is seen from the first instruction: the loader maps libc.
    assert!(
        base["syscalls"]["mmap"]["file_calls"].as_i64().unwrap() >= 1,
        "{base}"
    );
    assert!(
        base["syscalls"]["brk"]["queries"].as_i64().unwrap() >= 1,
        "{base}"
    );
}

#[test]
fn threads_are_all_traced() {
    let w = workload("syscalls");
    let w = w.to_str().unwrap();
    let (base, _) = trace_command(&[w, "0", "--threads", "4"]);
    let (run, _) = trace_command(&[w, "5", "--threads", "4"]);
    assert_eq!(
        delta(&run["syscalls"], &base["syscalls"]),
        syscalls_pattern(5, 4, false)
    );
}

/// `--pid` on a process that is already running: only the calls made after attaching.
#[test]
fn attach_to_running_process() {
    let w = workload("syscalls");
    let v = trace_gated(&w, &["4", "--gate"], &[], |_| {});
    assert!(v["target"]["exit_code"].is_null());
    assert_eq!(v["target"]["ended_by"], "exited");
    assert!(
        v["target"]["command"][0]
            .as_str()
            .unwrap()
            .ends_with("syscalls")
    );
    // Nothing happens after the gate but the pattern (exit makes no such syscalls).
    assert_eq!(v["syscalls"], syscalls_pattern(4, 1, true), "{v}");
}

/// `--duration` ends a `--pid` run while the process lives on.
#[test]
fn pid_run_ends_after_duration() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let json = json_path("duration");
    let out = tracer()
        .args([
            "--pid",
            &sleeper.id().to_string(),
            "--duration",
            "0.3",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["target"]["ended_by"], "duration");
    let ms = v["duration_ms"].as_f64().unwrap();
    assert!(ms >= 300.0, "{ms}");
    assert_eq!(v["syscalls"]["mmap"]["calls"], 0);
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the process must survive"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// An independent count: strace sees the same calls for deterministic programs.
#[test]
fn agrees_with_strace() {
    let w = workload("syscalls");
    let w = w.to_str().unwrap();
    for argv in [
        vec![w, "2"],
        vec!["ls", "-l", "/"],
        vec!["cat", "/proc/self/maps"],
    ] {
        let (v, out) = trace_command(&argv);
        assert!(out.status.success(), "{}", stderr(&out));
        let counts = strace_counts(&argv);
        for (name, (calls, errors)) in &counts {
            assert_eq!(
                v["syscalls"][name]["calls"], *calls,
                "{name} calls for {argv:?}: {v}"
            );
            if name != "brk" {
                // brk reports refusal by returning the old break, which strace does not count.
                assert_eq!(
                    v["syscalls"][name]["failed"], *errors,
                    "{name} errors for {argv:?}"
                );
            }
        }
        for name in NAMES {
            if !counts.iter().any(|(n, _)| n == name) {
                assert_eq!(v["syscalls"][name]["calls"], 0, "{name} for {argv:?}");
            }
        }
    }
}

const NAMES: [&str; 6] = ["brk", "mmap", "munmap", "mremap", "mprotect", "madvise"];

fn strace_counts(argv: &[&str]) -> Vec<(String, (i64, i64))> {
    let out = Command::new("strace")
        .args([
            "-c",
            "-e",
            "trace=brk,mmap,munmap,mremap,mprotect,madvise",
            "-o",
            "/dev/stderr",
        ])
        .args(argv)
        .stdout(Stdio::null())
        .output()
        .expect("strace is needed for this test (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            if !NAMES.contains(&name) {
                return None;
            }
            let calls = cols[3].parse().ok()?;
            let errors = if cols.len() == 6 {
                cols[4].parse().ok()?
            } else {
                0
            };
            Some((name.to_string(), (calls, errors)))
        })
        .collect()
}
