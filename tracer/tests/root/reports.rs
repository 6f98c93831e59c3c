//! Root tests of the outputs: recordings replayed, and the report files of a real run.

use std::{fs, process::Command};

use crate::support::*;
use serde_json::Value;

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
    // Thread names travel with the recording.
    let pid = v["target"]["pid"].to_string();
    assert_eq!(v["target"]["threads"][&pid], "demo");
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

/// Runs the alloc workload with every output and returns (summary, output directory).
fn run_with_every_output(tag: &str) -> (Value, std::path::PathBuf) {
    let w = workload("alloc");
    let dir = json_path(tag).with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let out = tracer()
        .args(["-q", "--json"])
        .arg(dir.join("summary.json"))
        .arg("--html")
        .arg(dir.join("report.html"))
        .arg("--svg")
        .arg(dir.join("svg"))
        .arg("--folded")
        .arg(dir.join("alloc.folded"))
        .arg("--pprof")
        .arg(dir.join("heap.pb.gz"))
        .args(["--", w.to_str().unwrap(), "3", "<script>alert(1)</script>"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (v, dir)
}

fn sum(v: &Value, key: &str) -> i64 {
    v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[key].as_i64().unwrap())
        .sum()
}

/// The pprof profile decodes with the public profile.proto, and its totals are the JSON's.
#[test]
fn pprof_totals_equal_the_json() {
    use std::io::Read as _;

    use prost::Message as _;
    use tracer::report::pprof::Profile;

    let (v, dir) = run_with_every_output("pprof");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(dir.join("heap.pb.gz")).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let profile = Profile::decode(raw.as_slice()).unwrap();
    let strings = &profile.string_table;
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| {
            (
                strings[t.r#type as usize].as_str(),
                strings[t.unit as usize].as_str(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
            ("resident_space", "bytes")
        ]
    );
    let total = |i: usize| -> i64 { profile.sample.iter().map(|s| s.value[i]).sum() };
    assert_eq!(total(0), sum(&v, "allocs"));
    assert_eq!(total(1), sum(&v, "bytes"));
    assert_eq!(total(3), sum(&v, "live_bytes"));
    assert_eq!(
        profile.sample.len(),
        v["user"]["sites"].as_array().unwrap().len()
    );
    // Functions and lines resolve: the leak site points at alloc.c's marked line.
    let leak_line = line_of("alloc.c", "/* LEAK */") as i64;
    let found = profile.location.iter().flat_map(|l| &l.line).any(|line| {
        let f = &profile.function[line.function_id as usize - 1];
        strings[f.name as usize] == "leak_here"
            && strings[f.filename as usize].ends_with("alloc.c")
            && line.line == leak_line
    });
    assert!(found, "leak_here at alloc.c:{leak_line} not in the profile");
}

/// The SVG charts and flamegraphs exist, are SVG, and show what the JSON says.
#[test]
fn svg_charts_and_flamegraphs() {
    let (v, dir) = run_with_every_output("svg");
    let svg = |name: &str| fs::read_to_string(dir.join("svg").join(name)).unwrap();
    for name in [
        "timeline.svg",
        "paths.svg",
        "sizes.svg",
        "kernel.svg",
        "flame-allocated.svg",
        "flame-live.svg",
    ] {
        let text = svg(name);
        assert!(
            text.starts_with("<svg") || text.starts_with("<?xml"),
            "{name}"
        );
        assert!(text.trim_end().ends_with("</svg>"), "{name}");
    }
    let timeline = svg("timeline.svg");
    for label in ["Memory over time", "live heap", "resident", "mmap call"] {
        assert!(timeline.contains(label), "timeline lacks {label}");
    }
    // The top site of the paths chart is the JSON's top site.
    let top = v["user"]["sites"][0]["stack"][0]["function"]
        .as_str()
        .unwrap();
    assert!(svg("paths.svg").contains(top), "paths chart lacks {top}");
    // The allocated flamegraph's total is the sum of the sites' bytes.
    let flame = svg("flame-allocated.svg");
    let total = sum(&v, "bytes");
    let expected = format!("all ({} bytes, 100%)", group_digits(total));
    assert!(flame.contains(&expected), "flamegraph lacks {expected}");
    // The folded file has a line per site with bytes, summing to the same total.
    let folded = fs::read_to_string(dir.join("alloc.folded")).unwrap();
    let folded_total: i64 = folded
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(folded_total, total);
    assert!(
        folded
            .lines()
            .any(|l| l.ends_with(&format!("main;leak_here {}", 4242))),
        "{folded}"
    );
}

fn group_digits(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The HTML page has every section, the JSON's numbers, and the target's strings escaped.
#[test]
fn html_page() {
    let (v, dir) = run_with_every_output("html");
    let page = fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    for id in [
        "id=\"paths\"",
        "id=\"sites\"",
        "id=\"leaks\"",
        "id=\"slab-caches\"",
        "id=\"flamegraphs\"",
    ] {
        assert!(page.contains(id), "{id}");
    }
    // The command line came from the target: escaped.
    assert!(!page.contains("<script>alert(1)</script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Every site and leak has its row.
    let sites = v["user"]["sites"].as_array().unwrap().len();
    let leaks = v["user"]["leaks"].as_array().unwrap().len();
    let kernel_caches = v["kernel"]["slab"]["by_cache"].as_object().unwrap().len();
    let callers = v["callers"].as_array().unwrap().len();
    assert!(callers > 0, "the memory syscalls have their callers");
    assert_eq!(
        page.matches("<tr><td class=\"l\">").count(),
        sites + leaks + kernel_caches + callers
    );
    assert!(page.contains(&format!("{} events received", v["events"]["received"])));
    // The path cards show the JSON's totals.
    let bytes =
        |path: &str| tracer::report::human_bytes(v["paths"][path]["bytes"].as_u64().unwrap());
    for (card, value) in [
        ("brk heap", bytes("brk")),
        ("mmap", bytes("mmap")),
        ("thread arenas", bytes("thread_arena")),
        (
            "buddy pages charged to sites",
            format!("{} pages", v["paths"]["buddy"]["pages"]),
        ),
        (
            "slab objects charged to sites",
            format!("{} objects", v["paths"]["slab"]["objects"]),
        ),
    ] {
        let expected = format!("data-path=\"{card}\">{card}<b>{value}</b>");
        assert!(page.contains(&expected), "no card {expected}");
    }
    assert!(page.contains("leak_here (alloc.c:"));
    // Ours only: the stacks' and the tables'.
    assert_eq!(page.matches("<script>").count(), 2);
}
