//! End to end without root: recordings made by the real probes, checked in under
//! `tests/fixtures/`, replayed through `tracer report` into every format and compared with
//! `tracer diff`. `cargo xtask fixtures` (root) makes them again; each `NAME.expected.json` is
//! the replay's JSON when it was made, so any change to what a report says shows here.
//!
//! The fixtures (workloads from `workloads/`, see their headers for the exact allocations):
//! - `demo`: `tracer --record -- demo`, the README's demo workload;
//! - `alloc`: `tracer --record -- alloc 3`, the malloc family three times and one leak;
//! - `alloc-more`: the same with 5 iterations (the other side of a diff);
//! - `kernel`: `tracer --mode kernel --record -- alloc 3`;
//! - `follow`: `tracer --follow --record -- forker`, three processes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh directory under the target directory, writable by anyone (the replay may run as
/// `nobody`).
fn out_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("recordings-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tracer report NAME.trace` into every format in `dir`; returns the text summary.
fn report_all(name: &str, dir: &Path) -> String {
    let trace = fixture(&format!("{name}.trace"));
    let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = tracer(&[
        "report",
        trace.to_str().unwrap(),
        "--json",
        &d("summary.json"),
        "--html",
        &d("report.html"),
        "--svg",
        &d("svg"),
        "--folded",
        &d("stacks.folded"),
        "--pprof",
        &d("profile.pb"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Each recording's JSON is what it was when the fixture was made, to the byte.
#[test]
fn replays_equal_the_committed_json() {
    for name in ["demo", "alloc", "alloc-more", "kernel", "follow"] {
        let dir = out_dir(&format!("json-{name}"));
        report_all(name, &dir);
        let got = fs::read_to_string(dir.join("summary.json")).unwrap();
        let expected = fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap();
        assert!(
            got == expected,
            "{name}: the replay's JSON differs from tests/fixtures/{name}.expected.json \
             (written to {})",
            dir.join("summary.json").display()
        );
    }
}

/// The numbers the workload's header promises, in every format.
#[test]
fn the_alloc_recording_in_every_format() {
    let dir = out_dir("alloc");
    let text = report_all("alloc", &dir);
    let v = json(&dir.join("summary.json"));
    // 3 iterations of 4 mallocs, and the leak.
    assert_eq!(v["user"]["malloc"]["calls"], 13);
    assert_eq!(v["user"]["calloc"]["calls"], 6);
    assert_eq!(v["user"]["calloc"]["bytes"], 3300);
    // 12 frees an iteration, 3 of them free(NULL).
    assert_eq!(v["user"]["free"]["calls"], 36);
    assert_eq!(v["user"]["free"]["null"], 3);
    assert_eq!(v["user"]["leaked_bytes"], 4242);
    assert_eq!(v["user"]["leaks"][0]["stack"][0]["function"], "leak_here");
    assert_eq!(v["target"]["command"], serde_json::json!(["./alloc", "3"]));
    // The text names the leak's site.
    assert!(text.contains("leak_here (alloc.c:51)"), "{text}");
    // The page holds the same site, and nothing from the program unescaped.
    let html = fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("leak_here"));
    assert!(html.trim_end().ends_with("</html>"));
    // Folded stacks: one line per site, their weights the bytes of every listed site.
    let folded = fs::read_to_string(dir.join("stacks.folded")).unwrap();
    let total: u64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    let sites: u64 = v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, sites);
    assert!(folded.contains(";main;leak_here 4242\n"), "{folded}");
    // pprof: a gzipped protobuf whose strings include the sample types and the site.
    let mut pprof = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(dir.join("profile.pb")).unwrap()),
        &mut pprof,
    )
    .unwrap();
    let has = |s: &str| pprof.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("leak_here") && has("alloc_space"));
    // SVG: every chart and flamegraph, each well-formed XML.
    let mut svgs: Vec<String> = fs::read_dir(dir.join("svg"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    svgs.sort();
    assert_eq!(
        svgs,
        [
            "flame-allocated.svg",
            "flame-live.svg",
            "flame-resident.svg",
            "kernel.svg",
            "paths.svg",
            "sizes.svg",
            "timeline.svg"
        ]
    );
    for svg in &svgs {
        let body = fs::read_to_string(dir.join("svg").join(svg)).unwrap();
        // inferno's flamegraphs declare their DTD.
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(&body, opts)
            .unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
    }
}

/// `--mode kernel`: no allocator calls, the syscalls with their callers.
#[test]
fn the_kernel_recording() {
    let dir = out_dir("kernel");
    let text = report_all("kernel", &dir);
    let v = json(&dir.join("summary.json"));
    assert_eq!(v["mode"], "kernel");
    assert_eq!(v["user"]["malloc"]["calls"], 0);
    assert!(v["user"]["sites"].as_array().unwrap().is_empty());
    // glibc's first brk is a query; the heap grew once by 132 KiB.
    assert_eq!(v["syscalls"]["brk"]["queries"], 2);
    assert_eq!(v["syscalls"]["brk"]["grow_bytes"], 135_168);
    assert!(!v["callers"].as_array().unwrap().is_empty());
    assert!(text.contains("kernel"), "{text}");
}

/// `--follow`: three processes, each with its own books and exit status.
#[test]
fn the_follow_recording() {
    let dir = out_dir("follow");
    report_all("follow", &dir);
    let v = json(&dir.join("summary.json"));
    let procs = v["processes"].as_array().unwrap();
    let got: Vec<(i64, i64, i64)> = procs
        .iter()
        .map(|p| {
            (
                p["exit_code"].as_i64().unwrap(),
                p["user"]["malloc"]["calls"].as_i64().unwrap(),
                p["user"]["malloc"]["bytes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [(0, 10, 10_000), (3, 20, 40_000), (5, 30, 90_000)]);
    // The child freed one block it inherited: a free of a block it never allocated.
    assert_eq!(procs[1]["user"]["free"]["unknown"], 1);
    assert_eq!(v["user"]["malloc"]["calls"], 60);
    assert_eq!(v["user"]["leaked_bytes"], 100_000);
}

/// `tracer diff` of two recordings: the change in numbers, and a gate that fails.
#[test]
fn diff_of_two_recordings() {
    let dir = out_dir("diff");
    let (a, b) = (fixture("alloc.trace"), fixture("alloc-more.trace"));
    let out_json = dir.join("diff.json");
    let out = tracer(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        out_json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = json(&out_json);
    let allocs = d["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metric"] == "allocs")
        .unwrap_or_else(|| panic!("{d}"));
    // 15 allocations an iteration and the leak; two iterations more.
    assert_eq!(
        (allocs["before"].as_f64(), allocs["after"].as_f64()),
        (Some(46.0), Some(76.0))
    );
    let text = stderr(&out);
    assert!(text.contains("family (alloc.c:38)"), "{text}");
    let gated = tracer(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-q",
        "--fail-if",
        "allocs>+10%",
    ]);
    assert_eq!(gated.status.code(), Some(3), "{}", stderr(&gated));
}

/// As root, the same replay as `nobody`: reporting needs no privilege.
#[test]
fn reporting_needs_no_privilege() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the other tests are the proof.
        return;
    }
    let dir = out_dir("nobody");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .arg("report")
        .arg(fixture("alloc.trace"))
        .arg("-q")
        .arg("--json")
        .arg(dir.join("summary.json"))
        .output()
        .expect("setpriv (util-linux)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dir.join("summary.json")).unwrap(),
        fs::read_to_string(fixture("alloc.expected.json")).unwrap()
    );
}

/// The same recording gives the same profile, byte for byte (its string table was once in a
/// hash map's order).
#[test]
fn pprof_is_the_same_every_time() {
    let dir = out_dir("pprof-again");
    let trace = fixture("follow.trace");
    let profiles: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let path = dir.join(format!("{i}.pb"));
            let out = tracer(&[
                "report",
                trace.to_str().unwrap(),
                "-q",
                "--pprof",
                path.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
            fs::read(path).unwrap()
        })
        .collect();
    assert!(profiles.windows(2).all(|w| w[0] == w[1]));
}

/// The summary's notes (here, what `--mode kernel` leaves out) say the same in every format.
#[test]
fn notes_are_in_every_format() {
    let dir = out_dir("notes");
    let text = report_all("kernel", &dir);
    let note = "allocator calls: not traced (--mode kernel attaches no uprobes)";
    assert!(text.contains(&format!("note: {note}")), "{text}");
    let v = json(&dir.join("summary.json"));
    assert_eq!(v["notes"][0]["level"], "note");
    assert!(v["notes"][0]["text"].as_str().unwrap().starts_with(note));
    let html = fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains(&format!("<p class=\"note\">note: {note}")),
        "no note in the page"
    );
    for chart in ["timeline.svg", "paths.svg", "sizes.svg", "kernel.svg"] {
        let svg = fs::read_to_string(dir.join("svg").join(chart)).unwrap();
        assert!(
            svg.contains(&format!(">note: {note}")),
            "{chart} has no footer"
        );
    }
    let mut pprof = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(dir.join("profile.pb")).unwrap()),
        &mut pprof,
    )
    .unwrap();
    let comment = format!("note: {note}");
    assert!(
        pprof
            .windows(comment.len())
            .any(|w| w == comment.as_bytes())
    );
}

/// A FIFO named `path` whose writer thread sends `bytes` (and `forever` more `y`s after
/// them, until the reader goes away).
fn fifo_of(path: &Path, bytes: Vec<u8>, forever: bool) -> std::thread::JoinHandle<()> {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        if f.write_all(&bytes).is_err() {
            return;
        }
        let ys = vec![b'y'; 1 << 16];
        while forever && f.write_all(&ys).is_ok() {}
    })
}

/// `tracer diff` reads each input once, streaming: a pipe (as `<(cat a.json)` gives) works for
/// a recording and for a JSON summary, and an endless input that is neither fails at once.
#[test]
fn diff_reads_pipes_and_stops_at_what_is_not_a_summary() {
    let dir = out_dir("diff-pipes");
    for (name, source) in [
        ("json", fixture("alloc.expected.json")),
        ("trace", fixture("alloc.trace")),
    ] {
        let pipe = dir.join(name);
        let writer = fifo_of(&pipe, fs::read(&source).unwrap(), false);
        let out_json = dir.join(format!("{name}.diff.json"));
        let out = tracer(&[
            "diff",
            pipe.to_str().unwrap(),
            fixture("alloc-more.trace").to_str().unwrap(),
            "-q",
            "--json",
            out_json.to_str().unwrap(),
        ]);
        writer.join().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let d = json(&out_json);
        assert_eq!(d["before"]["command"], serde_json::json!(["./alloc", "3"]));
    }
    let endless = dir.join("endless");
    let writer = fifo_of(&endless, Vec::new(), true);
    let started = std::time::Instant::now();
    let out = tracer(&[
        "diff",
        endless.to_str().unwrap(),
        fixture("alloc.trace").to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("neither a tracer recording nor"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    writer.join().unwrap();
}

/// The pprof profile opens as a heap profile (`inuse_space` first, as Go's does) and its first
/// mapping is the main executable, as pprof tools expect.
#[test]
fn pprof_opens_on_live_bytes_with_the_program_first() {
    use prost::Message as _;
    let dir = out_dir("pprof-shape");
    report_all("alloc", &dir);
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(dir.join("profile.pb")).unwrap()),
        &mut raw,
    )
    .unwrap();
    let p = tracer::report::pprof::Profile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(s(p.default_sample_type), "inuse_space");
    let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
            "resident_space"
        ]
    );
    assert!(
        s(p.mapping[0].filename).ends_with("/alloc"),
        "{}",
        s(p.mapping[0].filename)
    );
    assert_eq!(p.mapping[0].id, 1);
}
