//! Root tests of a run watched while it goes on: `--interval` with `--jsonl`, leak suspects,
//! and snapshots on SIGUSR1, on workloads/growing.c (a known leak, a cache that fills and
//! holds, and scratch buffers freed at once).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::Value;

fn first_function(site: &Value) -> &str {
    site["stack"][0]["function"].as_str().unwrap_or("?")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// 300 steps 10 ms apart: a JSON line per half second, the leak growing in every one, the
/// cache holding; summed, each site's `live_delta_bytes` is its live bytes at the end; the
/// leak, alone, is the suspect, at about 1000 bytes per 10 ms.
#[test]
fn intervals_track_growth_and_name_the_leak() {
    let w = workload("growing");
    let jsonl = json_path("intervals").with_extension("jsonl");
    let (v, out) = trace_with(
        &["--interval", "0.5", "--jsonl", jsonl.to_str().unwrap()],
        &[w.to_str().unwrap(), "300"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records = lines(&jsonl);
    // At least 3 s of steps at 0.5 s: six lines on a quiet machine, fewer when each summary
    // is slow (the next interval starts a full period after one is written). Three are the
    // fewest the checks below need: a first, one in the middle, the final one.
    assert!(records.len() >= 3, "{} lines", records.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["schema"], "tracer.interval/1");
        assert_eq!(r["final"], i == records.len() - 1, "line {i}");
        assert!(r["interval_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(r["events"]["dropped"], 0);
    }
    let t: Vec<f64> = records
        .iter()
        .map(|r| r["t_ms"].as_f64().unwrap())
        .collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");

    // Each site's deltas add up to its live bytes in the summary.
    let mut sums: std::collections::HashMap<String, i64> = Default::default();
    for r in &records {
        for s in r["sites"].as_array().unwrap() {
            *sums.entry(first_function(s).into()).or_default() +=
                s["live_delta_bytes"].as_i64().unwrap();
        }
    }
    let sites = v["user"]["sites"].as_array().unwrap();
    for function in ["leak_step", "cache_fill", "scratch"] {
        let site = sites
            .iter()
            .find(|s| first_function(s) == function)
            .unwrap_or_else(|| panic!("no {function} site"));
        assert_eq!(
            sums.get(function).copied(),
            site["live_bytes"].as_i64(),
            "{function}"
        );
    }
    let live =
        |f: &str| sites.iter().find(|s| first_function(s) == f).unwrap()["live_bytes"].clone();
    assert_eq!(live("leak_step"), 300_000);
    assert_eq!(live("cache_fill"), 100_000);
    assert_eq!(live("scratch"), 0);
    // The leak grew in every interval after the first; the cache stopped growing.
    for r in &records[1..records.len() - 1] {
        let leak = r["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| first_function(s) == "leak_step")
            .unwrap();
        assert!(leak["live_delta_bytes"].as_i64().unwrap() > 0, "{r}");
    }
    let last = &records[records.len() - 1];
    assert_eq!(last["live_bytes"], 400_000);

    // The summary's suspects: the leak only, at its rate (1000 bytes per step of at least
    // 10 ms: at most 6,000,000 bytes a minute, less when the machine is slow).
    let suspects = v["user"]["leak_suspects"].as_array().unwrap();
    assert_eq!(suspects.len(), 1, "{suspects:#?}");
    let s = &suspects[0];
    assert_eq!(first_function(s), "leak_step");
    assert_eq!(
        (s["live_bytes"].clone(), s["live_blocks"].clone()),
        (300_000.into(), 300.into())
    );
    let rate = s["growth_bytes_per_min"].as_f64().unwrap();
    assert!((1_000_000.0..6_100_000.0).contains(&rate), "{rate}");
    assert!(s["age_ms"]["max"].as_f64().unwrap() > s["age_ms"]["min"].as_f64().unwrap());
    // And the last interval line names it too.
    let named: Vec<&str> = last["leak_suspects"]
        .as_array()
        .unwrap()
        .iter()
        .map(first_function)
        .collect();
    assert_eq!(named, ["leak_step"]);
    // It is a finding too, naming the site: the leak check at exit found its blocks lost
    // (all but the last, kept in `sink`), so a leak, which says more than its growth.
    let finding = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "leak" && f["site"][0]["function"] == "leak_step")
        .unwrap_or_else(|| panic!("no leak finding for leak_step: {:#}", v["findings"]));
    assert_eq!(finding["evidence"]["kind"], "lost", "{finding}");
    assert!(
        !v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "leak_suspect" && f["site"][0]["function"] == "leak_step"),
        "a site is a leak or a suspect, not both"
    );
    // stderr is no terminal here: each block is appended under a timestamp line.
    let err = stderr(&out);
    let blocks = err.lines().filter(|l| l.starts_with("--- ")).count();
    assert!(blocks >= 4, "{err}");
    assert!(err.contains("leak suspect: leak_step (growing.c:"), "{err}");
}

/// `--min-age`: the leak's blocks of the last second are not counted.
#[test]
fn min_age_leaves_young_blocks_out_of_the_leaks() {
    let w = workload("growing");
    let (v, out) = trace_with(
        &["--min-age", "1", "--no-kernel"],
        &[w.to_str().unwrap(), "200"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let leak = v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| first_function(l) == "leak_step")
        .unwrap()
        .clone();
    // 200 steps over at least 2 s: the first 100 are a second older than the last, which is
    // too young.
    let count = leak["count"].as_u64().unwrap();
    assert!((100..200).contains(&count), "{count}");
    assert!(leak["oldest_age_ms"].as_f64().unwrap() >= 1000.0);
    // The sites still count every live byte.
    let site = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| first_function(s) == "leak_step")
        .unwrap()
        .clone();
    assert_eq!(site["live_bytes"], 200_000);
}

/// `kill -USR1 <tracer>` writes the JSON (and every other report) as of then, under a
/// timestamped name, and tracing goes on: the snapshot says "running" and counts no more than
/// the end.
#[test]
fn sigusr1_writes_a_snapshot_and_tracing_goes_on() {
    let w = workload("growing");
    let mut target = Command::new(&w).arg("400").spawn().unwrap();
    let json = json_path("snapshot");
    let dir = json
        .parent()
        .unwrap()
        .join(format!("snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let json = dir.join("out.json");
    let mut tracer = tracer()
        .args(["--no-kernel", "-q", "--pid", &target.id().to_string()])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr, line by line, on a thread: the test waits for "attached".
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = tracer.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let attached = rx.iter().find(|l| l.contains("attached to pid")).is_some();
    assert!(attached, "tracer never attached");
    std::thread::sleep(Duration::from_millis(500));
    let snapshot = wait_for_snapshot(&dir, tracer.id() as i32);
    let status = tracer.wait().unwrap();
    let err = reader.join().unwrap();
    target.wait().unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("tracer: snapshot "), "{err}");
    let snap: Value = serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    let end: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(snap["schema"], "tracer.summary/1");
    assert_eq!(snap["target"]["ended_by"], "running");
    assert_eq!(end["target"]["ended_by"], "exited");
    let calls = |v: &Value| v["user"]["malloc"]["calls"].as_u64().unwrap();
    assert!(
        calls(&snap) > 0 && calls(&snap) < calls(&end),
        "{} {}",
        calls(&snap),
        calls(&end)
    );
    assert!(
        snap["events"]["received"].as_u64().unwrap() < end["events"]["received"].as_u64().unwrap()
    );
}

/// Sends SIGUSR1 to `tracer` once it traces, and returns the snapshot file it writes in `dir`.
fn wait_for_snapshot(dir: &Path, tracer: i32) -> PathBuf {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(tracer, libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir(dir).unwrap().find_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            (name.starts_with("out.") && name.ends_with("Z.json")).then(|| dir.join(name))
        });
        if let Some(path) = found {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
