//! Root tests of `tracer diff` and `--fail-if`: two runs of workloads/growing.c with known
//! numbers (1000 leaked bytes and 8000 scratch bytes a step, a 100,000-byte cache), compared
//! from their recordings and from their JSON summaries, and gates on a live run.

use std::path::PathBuf;

use crate::support::*;
use serde_json::Value;

fn record(steps: &str, tag: &str) -> (PathBuf, PathBuf) {
    let w = workload("growing");
    let json = json_path(tag);
    let trace = json.with_extension("trace");
    let out = tracer()
        .args(["-q", "--no-kernel", "--record"])
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .arg(&w)
        .arg(steps)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (trace, json)
}

fn site<'a>(d: &'a Value, function: &str) -> &'a Value {
    d["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stack"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no {function} in {d:#}"))
}

#[test]
fn diff_compares_two_runs_site_by_site_and_gates() {
    let (trace_a, json_a) = record("20", "diff-a");
    let (trace_b, json_b) = record("60", "diff-b");
    let out_json = json_path("diff-out");
    let out = tracer()
        .arg("diff")
        .arg(&trace_a)
        .arg(&trace_b)
        .arg("--json")
        .arg(&out_json)
        .args([
            "--fail-if",
            "live_bytes>+10%",
            "--fail-if",
            "leaked_bytes>1G",
        ])
        .output()
        .unwrap();
    // live bytes grew by 40,000 of 120,000: the first condition holds.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--fail-if FAILED: live_bytes>+10%"), "{err}");
    assert!(err.contains("--fail-if passed: leaked_bytes>1G"), "{err}");
    assert!(err.contains("leak_step (growing.c:"), "{err}");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(d["schema"], "tracer.diff/1");
    let leak = site(&d, "leak_step");
    assert_eq!(leak["status"], "changed");
    assert_eq!(
        (
            leak["before"]["bytes"].clone(),
            leak["after"]["bytes"].clone()
        ),
        (20_000.into(), 60_000.into())
    );
    assert_eq!(leak["bytes_change"], 40_000);
    let scratch = site(&d, "scratch");
    assert_eq!(scratch["bytes_change"], 40 * 8000);
    assert_eq!(scratch["live_bytes_change"], 0);
    let cache = site(&d, "cache_fill");
    assert_eq!(
        (cache["before"]["bytes"].clone(), cache["status"].clone()),
        (40_000.into(), "changed".into())
    );
    assert_eq!(cache["bytes_change"], 60_000);
    let total = |m: &str| {
        d["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["metric"] == m)
            .unwrap()
            .clone()
    };
    assert_eq!(total("live_bytes")["change"], 40_000.0 + 60_000.0);

    // The JSON summaries compare the same way.
    let out = tracer()
        .args(["diff", "-q"])
        .arg(&json_a)
        .arg(&json_b)
        .arg("--json")
        .arg(&out_json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(site(&from_json, "leak_step")["bytes_change"], 40_000);
    assert_eq!(from_json["totals"], d["totals"]);

    // A run against itself: nothing changed.
    let out = tracer()
        .args(["diff"])
        .arg(&trace_a)
        .arg(&json_a)
        .args(["--fail-if", "allocs>+0%"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Not a summary: named.
    let out = tracer()
        .args(["diff"])
        .arg(&trace_a)
        .arg(workload("growing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("neither a tracer recording nor"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_live_run_fails_on_a_leak() {
    let w = workload("growing");
    let out = tracer()
        .args([
            "-q",
            "--no-kernel",
            "--fail-if",
            "leaked_bytes>0",
            "--fail-if",
            "leaked_blocks>1000",
        ])
        .arg("--")
        .arg(&w)
        .arg("10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    // 10 leaked blocks and the cache's 10 (glibc's own few besides).
    assert!(
        err.contains("--fail-if FAILED: leaked_bytes>0 (leaked_bytes = "),
        "{err}"
    );
    assert!(
        err.contains("--fail-if passed: leaked_blocks>1000"),
        "{err}"
    );
    let out = tracer()
        .args(["-q", "--fail-if", "live_bytes>+10%", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tracer diff"), "{}", stderr(&out));
}
