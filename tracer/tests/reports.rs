//! Root tests of the outputs: recordings replayed, and the report files of a real run.

mod support;

use std::{fs, process::Command};

use serde_json::Value;
use support::*;

/// `tracer report` on a recording produces the live run's JSON, byte for byte.
#[test]
fn replay_equals_the_live_run() {
    let w = workload("demo");
    let live = json_path("live");
    let recording = json_path("recording").with_extension("trace");
    let out = tracer()
        .args(["-q", "--json"])
        .arg(&live)
        .arg("--record")
        .arg(&recording)
        .arg("--")
        .arg(&w)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let replayed = json_path("replayed");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", recording.to_str().unwrap(), "-q", "--json"])
        .arg(&replayed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let live = fs::read_to_string(&live).unwrap();
    assert_eq!(fs::read_to_string(&replayed).unwrap(), live);
    let v: Value = serde_json::from_str(&live).unwrap();
    assert!(v["user"]["malloc"]["calls"].as_i64().unwrap() > 20_000);
    // The recording needs nothing from this machine: no file of the program is read again.
    let text = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", recording.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stderr(&text).contains("make_small_objects (demo.c:"),
        "{}",
        stderr(&text)
    );
}
