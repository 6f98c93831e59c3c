//! Root test of resident memory read from the kernel (`/proc/PID/pagemap`): a `--pid` target
//! that touched its memory before tracer attached, and reuses it after (workloads/prefilled.c).
//! And `--tid`, which narrows a `--pid` run to one thread.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use crate::support::*;
use serde_json::Value;

/// `tracer --pid` of workloads/prefilled.c, attached once it has filled and freed its blocks;
/// with `exits`, the workload exits once it has allocated them again (so that pagemap cannot
/// be read at the end), else the run lasts three seconds.
fn traced_prefilled(exits: bool) -> Value {
    let w = workload("prefilled");
    let dir = json_path("resident").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut target = Command::new(&w)
        .arg(&go)
        .args(exits.then_some("exit"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(target.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let json = dir.join("out.json");
    let mut tracer = tracer()
        .args(["-q", "--no-kernel", "--pid"])
        .arg(target.id().to_string())
        .arg("--json")
        .arg(&json)
        .args(if exits {
            &[][..]
        } else {
            &["--duration", "3"][..]
        })
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached: then the workload may go on.
    let err = BufReader::new(tracer.stderr.take().unwrap());
    let mut lines = err.lines().map_while(Result::ok);
    assert!(lines.any(|l| l.contains("attached to pid")));
    std::fs::write(&go, "").unwrap();
    let status = tracer.wait().unwrap();
    let _ = target.kill();
    let _ = target.wait();
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// The leak of the blocks allocated again after attach.
fn reused_leak(v: &Value) -> Value {
    v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["stack"][0]["function"] == "leak_reused")
        .unwrap_or_else(|| panic!("{:#}", v["user"]["leaks"]))
        .clone()
}

#[test]
fn memory_touched_before_attach_is_resident() {
    let v = traced_prefilled(false);
    let user = &v["user"];
    assert_eq!(user["resident_source"], "pagemap");
    let leak = reused_leak(&v);
    assert_eq!(
        (leak["count"].clone(), leak["bytes"].clone()),
        (5000.into(), 5_120_000.into())
    );
    // Written before the attach, resident now: not "never touched".
    let resident = leak["resident_bytes"].as_u64().unwrap();
    assert!(resident >= 5_000_000, "{leak:#}");
    assert!(
        leak["virtual_bytes"].as_u64().unwrap() <= 120_000,
        "{leak:#}"
    );
    // A site's resident bytes are at most its live bytes, and its leak's are the same number.
    let sites = user["sites"].as_array().unwrap();
    for site in sites {
        let resident = site["paths"]["resident_bytes"].as_u64().unwrap();
        assert!(resident <= site["live_bytes"].as_u64().unwrap(), "{site:#}");
    }
    let reused = sites
        .iter()
        .find(|s| s["stack"][0]["function"] == "leak_reused")
        .unwrap();
    assert_eq!(reused["paths"]["resident_bytes"], leak["resident_bytes"]);
    // Together they are the heap's resident bytes but for malloc's chunk headers (16 bytes a
    // live block) and the pages' free rest, within a page a site.
    let sum: u64 = sites
        .iter()
        .map(|s| s["paths"]["resident_bytes"].as_u64().unwrap())
        .sum();
    let heap = user["heap_resident_bytes"].as_u64().unwrap();
    let blocks: u64 = sites
        .iter()
        .map(|s| s["allocs"].as_u64().unwrap() - s["frees"].as_u64().unwrap())
        .sum();
    assert!(sum <= heap, "{sum} > {heap}");
    assert!(
        heap - sum <= 16 * blocks + 4096 * (sites.len() as u64 + 8),
        "{sum} vs {heap}"
    );
}

/// A target that exits before the end cannot be read then: what was resident at attach, and
/// touched since, is what is resident; the reused blocks are not "never touched".
#[test]
fn memory_touched_before_attach_is_resident_after_the_target_exits() {
    let v = traced_prefilled(true);
    assert_eq!(v["target"]["ended_by"], "exited");
    let user = &v["user"];
    assert_eq!(user["resident_source"], "pagemap_at_attach");
    let leak = reused_leak(&v);
    assert_eq!(leak["count"], 5000);
    let resident = leak["resident_bytes"].as_u64().unwrap();
    assert!(resident >= 5_000_000, "{leak:#}");
}

/// `--tid`: only that thread's allocator calls are traced.
#[test]
fn tid_traces_one_thread() {
    let w = workload("two_threads");
    let dir = json_path("tid").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut target = Command::new(&w)
        .arg(&go)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(target.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let tids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    let json = dir.join("out.json");
    let mut tracer = tracer()
        .args(["-q", "--no-kernel", "--duration", "2", "--pid"])
        .arg(target.id().to_string())
        .arg("--tid")
        .arg(tids[1].to_string())
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(tracer.stderr.take().unwrap());
    assert!(
        err.lines()
            .map_while(Result::ok)
            .any(|l| l.contains("attached to pid"))
    );
    std::fs::write(&go, "").unwrap();
    let status = tracer.wait().unwrap();
    let _ = target.kill();
    let _ = target.wait();
    assert!(status.success());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sites = v["user"]["sites"].as_array().unwrap();
    let of = |f: &str| {
        sites
            .iter()
            .find(|s| s["stack"][0]["function"] == f)
            .cloned()
    };
    let b = of("thread_b").unwrap_or_else(|| panic!("{sites:#?}"));
    assert_eq!(
        (b["allocs"].clone(), b["bytes"].clone()),
        (500.into(), 100_000.into())
    );
    assert!(of("thread_a").is_none(), "{sites:#?}");
    assert_eq!(v["user"]["malloc"]["calls"], 500);

    // A thread of another process is refused.
    let out = crate::support::tracer()
        .args(["-q", "--pid", "1", "--tid"])
        .arg(tids[1].to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no thread"), "{}", stderr(&out));
}
