//! Root tests of `--sample`: estimates from sampled allocator calls, on a workload whose every
//! site, size and leak is known (workloads/sampled.c).

use crate::support::*;
use serde_json::Value;

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The entry of `list` whose stack passes through `function`.
fn through<'a>(list: &'a Value, function: &str) -> Option<&'a Value> {
    list.as_array().unwrap().iter().find(|s| {
        s["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == function)
    })
}

fn within(estimate: f64, truth: f64, tolerance: f64, what: &str) {
    let error = (estimate - truth).abs() / truth;
    assert!(
        error <= tolerance,
        "{what}: estimated {estimate}, truly {truth} ({:.1}% off)",
        error * 100.0
    );
}

/// With one call sampled per 32 KiB on average, the estimate of each site above 1% of the
/// bytes is within 10% of the truth, and of the leak within 15%. The interval is chosen so that
/// these bounds are more than five standard errors wide: the test does not fail by chance.
#[test]
fn estimates_sites_and_leaks() {
    let w = workload("sampled");
    let (v, out) = trace_with(
        &["--sample", "32K", "--no-kernel", "--max-sites", "50"],
        &[w.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let user = &v["user"];
    let sampling = &user["sampling"];
    assert_eq!(sampling["mean_bytes"], 32 * 1024);
    let seen = n(&sampling["sampled_calls"]);
    let unseen = n(&sampling["unsampled_calls"]);
    // 186,000 allocating calls in the workload (the loader's few besides).
    let calls = seen + unseen;
    assert!((186_000.0..186_500.0).contains(&calls), "{calls} calls");
    // About one call per 32 KiB of the 566 MB is sampled: some 17,000, not 186,000.
    assert!((12_000.0..24_000.0).contains(&seen), "{seen} sampled");
    assert!(n(&v["events"]["received"]) < 60_000.0);

    let sites = &user["sites"];
    for (function, bytes, count) in [
        ("churn_4k", 163_840_000.0, 40_000.0),
        ("churn_10k", 200_000_000.0, 20_000.0),
        ("churn_1k", 100_000_000.0, 100_000.0),
        ("leak_4k", 102_400_000.0, 25_000.0),
    ] {
        let site = through(sites, function).unwrap_or_else(|| panic!("no {function} site"));
        within(n(&site["bytes"]), bytes, 0.10, function);
        within(n(&site["allocs"]), count, 0.10, function);
        // The stated error is the size of the real one: a 95% interval of some percent.
        let error = n(&site["bytes_error"]) / bytes;
        assert!((0.005..0.08).contains(&error), "{function}: error {error}");
    }
    // Freed sites are freed: their live estimate is zero, as every sampled block was freed.
    assert_eq!(through(sites, "churn_4k").unwrap()["live_bytes"], 0);
    let leak = through(&user["leaks"], "leak_4k").expect("the leak");
    within(n(&leak["bytes"]), 102_400_000.0, 0.15, "leaked bytes");
    assert!(through(&user["leaks"], "churn_1k").is_none());
    within(
        n(&user["malloc"]["bytes"]),
        566_340_000.0,
        0.10,
        "malloc bytes",
    );
    assert_eq!(v["events"]["unpaired"], 0);
}

/// Unsampled C++ operator new calls malloc inside: that malloc is part of the call, not a
/// second chance to be sampled, so no malloc is reported; operator new and delete are
/// estimated (400,000 calls each, 112 bytes per four calls).
#[test]
fn nested_calls_of_unsampled_calls_are_not_sampled() {
    let w = build(
        "cxx",
        "cxx.cpp",
        &["g++", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let w = w.to_str().unwrap();
    let (base, _) = trace_with(&["--no-kernel"], &[w, "0"], &[]);
    let (v, out) = trace_with(&["--sample", "4K", "--no-kernel"], &[w, "100000"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user = &v["user"];
    within(
        n(&user["operator_new"]["calls"]),
        400_000.0,
        0.2,
        "new calls",
    );
    within(
        n(&user["operator_new"]["bytes"]),
        11_200_000.0,
        0.2,
        "new bytes",
    );
    within(
        n(&user["operator_delete"]["calls"]),
        400_000.0,
        0.2,
        "delete calls",
    );
    let base_calls = |f: &str| n(&base["user"][f]["calls"]);
    assert!(
        n(&user["malloc"]["calls"]) <= base_calls("malloc") + 1.0,
        "inner mallocs sampled: {}",
        user["malloc"]
    );
    assert_eq!(n(&user["free"]["calls"]), base_calls("free"), "inner frees");
    assert_eq!(user["live_bytes_at_end"], base["user"]["live_bytes_at_end"]);
    assert_eq!(v["events"]["unpaired"], 0);
}
