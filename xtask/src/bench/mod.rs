//! `cargo xtask bench`: what tracing costs, as ratios measured in one run on this machine, in
//! one table, written to docs/benchmarks.md.
//!
//! Timings come from the workloads themselves (`workloads/bench.c` times its own loops), so
//! attaching and detaching are not in them; start and stop are measured on their own rows.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, build_workload, setup, status, workspace_root};

mod real;

/// One row of the table: what was measured, the value and its unit, and the ratio to the
/// untraced run where that applies.
struct Row {
    what: String,
    value: f64,
    unit: &'static str,
    ratio: Option<f64>,
}

struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    fn add(&mut self, what: impl Into<String>, value: f64, unit: &'static str, base: Option<f64>) {
        let row = Row {
            what: what.into(),
            value,
            unit,
            ratio: base.map(|b| value / b),
        };
        println!("{}", format_row(&row));
        self.rows.push(row);
    }

    /// A row whose ratio was measured pairwise (see `measure_paired`), if it has one.
    fn add_measured(
        &mut self,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
        ratio: Option<f64>,
    ) {
        let row = Row {
            what: what.into(),
            value,
            unit,
            ratio,
        };
        println!("{}", format_row(&row));
        self.rows.push(row);
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  ({text})");
        self.notes.push(text);
    }
}

fn format_row(r: &Row) -> String {
    let ratio = r.ratio.map_or(String::new(), |x| format!("{x:.2}x"));
    format!(
        "| {:<58} | {:>12.1} {:<6} | {:>7} |",
        r.what, r.value, r.unit, ratio
    )
}

/// A measured configuration: its name, and how to start one run of it.
type Config<'a> = (String, Box<dyn Fn() -> Command + 'a>);

/// One run of a workload printing "PAIR_NS PAGE_NS" (among other lines, for the tools that
/// wrap it).
fn run_once(mut c: Command) -> Result<(f64, f64)> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace().map(str::parse::<f64>);
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b)), None) => Some((a, b)),
                _ => None,
            }
        })
        .with_context(|| format!("no timing line from {c:?}: {text}"))
}

/// What one configuration measured: the medians of its timings and of their ratios to the
/// baseline run paired with each.
#[derive(Clone, Copy)]
struct Measured {
    pair: f64,
    page: f64,
    /// `None` for the baseline itself.
    ratios: Option<(f64, f64)>,
}

/// `runs` rounds in which every configuration after the first (the baseline) runs once, each
/// right after a run of the baseline: a ratio is taken between two runs seconds apart, and
/// the row gives the median of those ratios. The host's load drifts within seconds here (a
/// single run of the baseline varies by a fifth), so a ratio to a baseline measured minutes
/// earlier would measure the drift.
fn measure_paired(runs: usize, configs: &[Config<'_>]) -> Result<Vec<Measured>> {
    let mut base = (Vec::new(), Vec::new());
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; configs.len()];
    let baseline = &configs[0].1;
    for _ in 0..runs {
        for ((_, cmd), s) in configs.iter().zip(&mut samples).skip(1) {
            let (base_pair, base_page) = run_once(baseline())?;
            let (pair, page) = run_once(cmd())?;
            base.0.push(base_pair);
            base.1.push(base_page);
            s[0].push(pair);
            s[1].push(page);
            s[2].push(pair / base_pair);
            s[3].push(page / base_page);
        }
    }
    let mut out = vec![Measured {
        pair: median(&mut base.0),
        page: median(&mut base.1),
        ratios: None,
    }];
    for [mut pair, mut page, mut pair_r, mut page_r] in samples.into_iter().skip(1) {
        out.push(Measured {
            pair: median(&mut pair),
            page: median(&mut page),
            ratios: Some((median(&mut pair_r), median(&mut page_r))),
        });
    }
    Ok(out)
}

/// Rounds of the loop measurements (`measure_paired`). The page-touch loop's first touches
/// vary most from run to run (the host backs a guest's pages as it likes): with 5 rounds its
/// kernel-mode ratio moved between 1.10x and 1.32x from one bench to the next.
const RUNS: usize = 7;

/// Pairs of the malloc loop where no uprobe is attached, per pair of the traced loop: at about
/// 12 ns a pair, 500 times the default 200,000 runs for 1.2 s. A tenth of that ran so briefly
/// that a neighbour's burst moved one run by several percent, which is the size of what these
/// rows measure.
const MANY: u64 = 500;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tracer_cmd(tracer: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(tracer);
    c.args(["-q"]).args(args);
    c
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("Linux {}, {cpu}, {cores} cores", kernel.trim())
}

pub fn run(n: u64, real_only: bool, redis_only: bool) -> Result<()> {
    build()?;
    let tracer = workspace_root().join("target/release/tracer");
    if redis_only {
        let peers = setup::ensure_bench_tools();
        let mut t = Table {
            rows: Vec::new(),
            notes: Vec::new(),
        };
        redis_rows(&tracer, peers.bpftrace, &mut t)?;
        for note in &t.notes {
            println!("{note}");
        }
        return Ok(());
    }
    if real_only {
        let peers = setup::ensure_bench_tools();
        let mut t = Table {
            rows: Vec::new(),
            notes: Vec::new(),
        };
        real::rows(&tracer, peers.heaptrack, &mut t)?;
        return real::breakdown_rows(&tracer, &mut t);
    }
    let bench = build_workload("bench")?;
    let random_live = build_workload("random_live")?;
    let peers = setup::ensure_bench_tools();
    let mut t = Table {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    let machine = machine();
    println!("tracer bench on {machine}");
    println!(
        "| {:<58} | {:>19} | {:>7} |",
        "measurement", "value", "ratio"
    );
    let n_s = n.to_string();
    let b = bench.to_str().context("bench path")?;

    // The malloc/free loop and the page-touch loop, in each mode and under each peer.
    let modes: [(&str, &[&str]); 7] = [
        ("tracer (full)", &[]),
        ("tracer --no-kernel", &["--no-kernel"]),
        (
            "tracer --no-kernel --stacks fp",
            &["--no-kernel", "--stacks", "fp"],
        ),
        ("tracer --sample 512K", &["--sample", "512K"]),
        ("tracer --mode kernel", &["--mode", "kernel"]),
        (
            "tracer --mode kernel --fault-stacks",
            &["--mode", "kernel", "--fault-stacks"],
        ),
        (
            "tracer --mode kernel --no-kernel (syscalls only)",
            &["--mode", "kernel", "--no-kernel"],
        ),
    ];
    let script = format!(
        "uprobe:{l}:malloc {{ @e = count(); }} uretprobe:{l}:malloc {{ @r = count(); }} \
         uprobe:{l}:free {{ @f = count(); }}",
        l = setup::LIBC
    );
    let heaptrack_out = std::env::temp_dir().join("tracer-bench-heaptrack");
    // Where a pair costs nanoseconds (no uprobes), many more pairs, so the loop runs long
    // enough to time; the pages stay the same.
    let many = (n * MANY).to_string();
    let mut configs: Vec<Config> = vec![(
        "untraced".into(),
        Box::new(|| {
            let mut c = Command::new(&bench);
            c.args([&many, "0", &n_s]);
            c
        }),
    )];
    for (name, args) in modes {
        let pairs = if args.starts_with(&["--mode", "kernel"]) {
            &many
        } else {
            &n_s
        };
        let (tracer, bench, n_s) = (&tracer, &bench, &n_s);
        configs.push((
            name.into(),
            Box::new(move || {
                let mut c = tracer_cmd(tracer, args);
                c.arg("--").arg(bench).args([pairs, "0", n_s]);
                c
            }),
        ));
    }
    if peers.bpftrace {
        let (script, b, n_s) = (&script, b, &n_s);
        configs.push((
            "bpftrace count-only".into(),
            Box::new(move || {
                let mut c = Command::new("bpftrace");
                c.args(["-e", script, "-c", &format!("{b} {n_s}")]);
                c
            }),
        ));
    } else {
        t.note("bpftrace is not installed: its row is missing");
    }
    if peers.heaptrack {
        let (out, bench, n_s) = (&heaptrack_out, &bench, &n_s);
        configs.push((
            "heaptrack (LD_PRELOAD)".into(),
            Box::new(move || {
                let mut c = Command::new("heaptrack");
                c.arg("-o").arg(out).arg(bench).arg(n_s);
                c
            }),
        ));
    } else {
        t.note("heaptrack is not installed: its row is missing");
    }
    let results = measure_paired(RUNS, &configs)?;
    for ((name, _), m) in configs.iter().zip(&results) {
        t.add_measured(
            format!("malloc+free pair, {name}"),
            m.pair,
            "ns",
            m.ratios.map(|r| r.0),
        );
    }
    // Sampling's target is a share of full tracing's cost, not of the untraced loop's.
    let pair_of = |mode: &str| {
        configs
            .iter()
            .zip(&results)
            .find_map(|((name, _), m)| (name == mode).then_some(m.pair))
    };
    if let (Some(sampled), Some(full)) = (pair_of("tracer --sample 512K"), pair_of("tracer (full)"))
    {
        t.add(
            "malloc+free pair, tracer --sample 512K over tracer (full)",
            sampled,
            "ns",
            Some(full),
        );
    }
    for ((name, _), m) in configs.iter().zip(&results).take(1 + modes.len()) {
        t.add_measured(
            format!("page touch, {name}"),
            m.page,
            "ns",
            m.ratios.map(|r| r.1),
        );
    }

    // A deep stack: the stack walk is per allocation.
    let deep: Vec<Config> = vec![
        (
            "untraced".into(),
            Box::new(|| {
                let mut c = Command::new(&bench);
                c.arg(&n_s).arg("64");
                c
            }),
        ),
        (
            "tracer --no-kernel".into(),
            Box::new(|| {
                let mut c = tracer_cmd(&tracer, &["--no-kernel"]);
                c.arg("--").arg(&bench).arg(&n_s).arg("64");
                c
            }),
        ),
        (
            "tracer --no-kernel --stacks fp".into(),
            Box::new(|| {
                let mut c = tracer_cmd(&tracer, &["--no-kernel", "--stacks", "fp"]);
                c.arg("--").arg(&bench).arg(&n_s).arg("64");
                c
            }),
        ),
        (
            "tracer --no-kernel --sample 512K".into(),
            Box::new(|| {
                let mut c = tracer_cmd(&tracer, &["--no-kernel", "--sample", "512K"]);
                c.arg("--").arg(&bench).arg(&n_s).arg("64");
                c
            }),
        ),
    ];
    let deep_results = measure_paired(RUNS, &deep)?;
    for ((name, _), m) in deep.iter().zip(&deep_results) {
        t.add_measured(
            format!("malloc+free pair 64 frames deep, {name}"),
            m.pair,
            "ns",
            m.ratios.map(|r| r.0),
        );
    }

    // Start and stop, with the default probes and with raw tracepoints throughout.
    for (name, args) in [
        ("tracer -q -- /bin/true", &[][..]),
        (
            "tracer -q --kernel-probes raw -- /bin/true",
            &["--kernel-probes", "raw"][..],
        ),
        (
            "tracer -q --stacks fp -- /bin/true",
            &["--stacks", "fp"][..],
        ),
    ] {
        let started = Instant::now();
        let status = tracer_cmd(&tracer, args)
            .args(["--", "/bin/true"])
            .status()?;
        if !status.success() {
            bail!("{name} failed: {status}");
        }
        t.add(
            format!("{name}, wall time"),
            started.elapsed().as_secs_f64(),
            "s",
            None,
        );
    }
    let mut sleeper = Command::new("sleep").arg("30").spawn()?;
    let pid = sleeper.id().to_string();
    let json = std::env::temp_dir().join("tracer-bench-stop.json");
    let _ = std::fs::remove_file(&json);
    let mut child = tracer_cmd(&tracer, &["--pid", &pid, "--duration", "1", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // The duration starts when tracer says it is attached; the report is on disk when the
    // file appears (it is renamed into place whole).
    let stderr = child.stderr.take().context("tracer's stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached to pid") {
                let _ = tx.send(Instant::now());
            }
        }
    });
    let attached = rx
        .recv_timeout(Duration::from_secs(60))
        .context("tracer did not attach")?;
    let written = loop {
        if json.exists() {
            break Instant::now();
        }
        if attached.elapsed() > Duration::from_secs(60) {
            bail!("no report 60 s after attaching");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let status = child.wait()?;
    let exited = Instant::now();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if !status.success() {
        bail!("tracer --pid --duration 1 failed: {status}");
    }
    t.add(
        "--pid --duration 1: from the end of the duration to the report on disk",
        (written - attached).as_secs_f64() - 1.0,
        "s",
        None,
    );
    t.add(
        "--pid --duration 1: from the end of the duration to tracer's exit",
        (exited - attached).as_secs_f64() - 1.0,
        "s",
        None,
    );

    // Recording size and replay speed, on 100,000 live blocks replaced at random.
    let (events, bytes, replay_s) = replay(&tracer, &random_live)?;
    t.add(
        format!("recording of random_live ({events} events)"),
        bytes as f64 / events as f64,
        "B/ev",
        None,
    );
    t.add(
        "replay (tracer report, one core, median of 3)",
        events as f64 / replay_s / 1e6,
        "M ev/s",
        None,
    );
    let (allocs, rss) = rss_at_many_allocations(&tracer)?;
    t.add(
        format!(
            "tracer's peak RSS through {:.1}M allocations (random_live's events, repeated)",
            allocs as f64 / 1e6
        ),
        rss as f64 / f64::from(1 << 20),
        "MiB",
        None,
    );

    flood_rows(&tracer, &mut t)?;
    leak_check_rows(&tracer, &mut t)?;
    if peers.heaptrack {
        real::rows(&tracer, true, &mut t)?;
        real::breakdown_rows(&tracer, &mut t)?;
    } else {
        t.note("heaptrack is not installed: the rows of real programs are missing");
    }

    if peers.redis {
        redis_rows(&tracer, peers.bpftrace, &mut t)?;
    } else {
        t.note("redis-server and redis-benchmark are not installed: the redis rows are missing");
    }
    write_doc(&machine, &t, n)
}

/// The leak check's pause at exit on workloads/big_heap.c: 100 MiB of heap in 256-byte blocks
/// and 10 MiB of other writable memory (the target: at most 200 ms), and per MiB scanned;
/// the median of 3. And what the check adds to the run (with and without it, interleaved).
fn leak_check_rows(tracer: &Path, t: &mut Table) -> Result<()> {
    let big = build_workload("big_heap")?;
    let json = std::env::temp_dir().join("tracer-bench-leak-check.json");
    let (mut pauses, mut per_mib, mut with, mut without) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        for check in [true, false] {
            let mut c = tracer_cmd(tracer, &["--json"]);
            c.arg(&json);
            if !check {
                c.arg("--no-leak-check");
            }
            let began = Instant::now();
            status(c.arg("--").arg(&big).stdout(Stdio::null()))?;
            let took = began.elapsed().as_secs_f64();
            if !check {
                without.push(took);
                continue;
            }
            with.push(took);
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            let c = &v["user"]["leak_check"];
            let pause = c["pause_ms"]
                .as_f64()
                .context("no leak check in the summary")?;
            let mib = c["scanned_bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20);
            pauses.push(pause);
            per_mib.push(pause / mib.max(1.0));
        }
    }
    t.add(
        "leak check at exit, 100 MiB heap (256 B blocks) + 10 MiB else: the pause",
        median(&mut pauses),
        "ms",
        None,
    );
    t.add(
        "leak check: pause per MiB scanned",
        median(&mut per_mib),
        "ms",
        None,
    );
    t.add(
        "leak check: what it adds to that run (with minus --no-leak-check)",
        (median(&mut with) - median(&mut without)) * 1e3,
        "ms",
        None,
    );
    Ok(())
}

/// Events lost to floods the ring must keep up with: many producer threads (`threads T 2000`:
/// 50 and 500 threads of 2,000 malloc/free pairs), and summaries every second over 65,536 call
/// sites while events keep coming (`many_sites 16 4 --interval 1`). Each the median of 3.
fn flood_rows(tracer: &Path, t: &mut Table) -> Result<()> {
    let threads = build_workload("threads")?;
    let many = build_workload("many_sites")?;
    let json = std::env::temp_dir().join("tracer-bench-flood.json");
    let dropped = |options: &[&str], argv: &[&str]| -> Result<f64> {
        let mut shares = Vec::new();
        for _ in 0..3 {
            let mut c = tracer_cmd(tracer, &["--json", json.to_str().expect("utf-8")]);
            c.args(options).arg("--").args(argv);
            status(&mut c)?;
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
            let (got, lost) = (
                v["events"]["received"].as_f64().unwrap_or(0.0),
                v["events"]["dropped"].as_f64().unwrap_or(0.0),
            );
            shares.push(100.0 * lost / (got + lost).max(1.0));
        }
        Ok(median(&mut shares))
    };
    let threads = threads.to_str().expect("utf-8");
    for n in ["50", "500"] {
        let share = dropped(&[], &[threads, n, "2000"])?;
        t.add(
            format!("events dropped, {n} threads x 2000 malloc/free pairs"),
            share,
            "%",
            None,
        );
    }
    let share = dropped(
        &["--interval", "1", "--max-stacks", "262144"],
        &[many.to_str().expect("utf-8"), "16", "4"],
    )?;
    t.add(
        "events dropped, --interval 1 over 65,536 sites (many_sites 16 4)",
        share,
        "%",
        None,
    );
    let (cost, peak) = interval_cost(tracer, &many)?;
    t.add(
        "time an interval takes over 65,536 sites (median, past its 1 s period)",
        cost,
        "ms",
        None,
    );
    t.add(
        "tracer's peak RSS, --interval 1 over 65,536 sites",
        peak as f64 / f64::from(1 << 20),
        "MiB",
        None,
    );
    Ok(())
}

/// `many_sites 16 24 --interval 1` (several seconds of events): how long each interval's summary and line take (the next
/// period starts when one is done, so each interval is 1 s plus the last one's cost), and
/// tracer's peak RSS.
fn interval_cost(tracer: &Path, many: &Path) -> Result<(f64, u64)> {
    let jsonl = std::env::temp_dir().join("tracer-bench-intervals.jsonl");
    let mut c = tracer_cmd(
        tracer,
        &["--interval", "1", "--max-stacks", "262144", "--jsonl"],
    );
    c.arg(&jsonl).arg("--").arg(many).args(["16", "24"]);
    c.stdout(Stdio::null());
    let (exit, peak) = peak_rss(c.spawn()?)?;
    if !exit.success() {
        bail!("tracer --interval over many_sites failed: {exit}");
    }
    let mut costs: Vec<f64> = std::fs::read_to_string(&jsonl)?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .skip(1)
        .filter(|v| v["final"] == false)
        .filter_map(|v| v["interval_ms"].as_f64())
        .map(|ms| ms - 1000.0)
        .collect();
    if costs.is_empty() {
        bail!("many_sites ended before its second interval");
    }
    Ok((median(&mut costs), peak))
}

/// Records `random_live` and replays it three times: (events, recording bytes, the median
/// replay's seconds).
fn replay(tracer: &Path, workload: &Path) -> Result<(u64, u64, f64)> {
    let dir = std::env::temp_dir();
    let rec = dir.join("tracer-bench.trace");
    let json = dir.join("tracer-bench-replay.json");
    let status = tracer_cmd(tracer, &["--no-kernel", "--record"])
        .arg(&rec)
        .arg("--")
        .arg(workload)
        .arg("1000000")
        .status()?;
    if !status.success() {
        bail!("recording random_live failed: {status}");
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new(tracer)
            .arg("report")
            .arg(&rec)
            .args(["-q", "--json"])
            .arg(&json)
            .status()?;
        times.push(started.elapsed().as_secs_f64());
        if !status.success() {
            bail!("tracer report failed: {status}");
        }
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[1];
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let events = summary["events"]["received"]
        .as_u64()
        .context("events.received")?;
    Ok((events, std::fs::metadata(&rec)?.len(), seconds))
}

/// Allocations the RSS row goes through: the 50 million.
const RSS_ALLOCATIONS: u64 = 50_000_000;

/// tracer's peak resident memory through [`RSS_ALLOCATIONS`] allocations, on the recording
/// `replay` made: its event batches written again and again into one recording (each batch
/// record is self-contained), replayed through the same model a live run feeds. A live run
/// at ~5 µs a pair would take minutes to make as many. Returns (allocations, bytes).
fn rss_at_many_allocations(tracer: &Path) -> Result<(u64, u64)> {
    let dir = std::env::temp_dir();
    let rec = dir.join("tracer-bench.trace");
    let big = dir.join("tracer-bench-repeated.trace");
    let json = dir.join("tracer-bench-repeated.json");
    let once: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("tracer-bench-replay.json"),
    )?)?;
    let per_copy = allocations(&once).max(1);
    let copies = RSS_ALLOCATIONS.div_ceil(per_copy);
    repeat_events(&rec, &big, copies)?;
    let child = Command::new(tracer)
        .arg("report")
        .arg(&big)
        .args(["-q", "--json"])
        .arg(&json)
        .spawn()?;
    let (exit, peak) = peak_rss(child)?;
    let _ = std::fs::remove_file(&big);
    if !exit.success() {
        bail!("tracer report of the repeated recording failed: {exit}");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    Ok((allocations(&summary), peak))
}

/// Waits for `child`; its exit and its peak resident memory in bytes.
fn peak_rss(mut child: Child) -> Result<(std::process::ExitStatus, u64)> {
    // VmHWM only grows: its last reading before the exit is the peak (within a poll).
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let exit = loop {
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        }) {
            peak = peak.max(kib * 1024);
        }
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((exit, peak))
}

/// The allocating calls a summary counts.
fn allocations(summary: &serde_json::Value) -> u64 {
    [
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "operator_new",
    ]
    .iter()
    .filter_map(|f| summary["user"][f]["calls"].as_u64())
    .sum()
}

/// Writes `from` to `to` with its event batches `copies` times over: the records before the
/// first batch, every batch in order `copies` times, then the records after the batches.
fn repeat_events(from: &Path, to: &Path, copies: u64) -> Result<()> {
    const EVENTS: u8 = 2;
    let bytes = std::fs::read(from)?;
    let (header, mut rest) = bytes.split_at_checked(16).context("a recording header")?;
    let (mut before, mut batches, mut after) = (Vec::new(), Vec::new(), Vec::new());
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(1..5).context("a record header")?.try_into()?);
        let (record, next) = rest
            .split_at_checked(9 + len as usize)
            .context("a whole record")?;
        match (record[0], batches.is_empty()) {
            (EVENTS, _) => batches.push(record),
            (_, true) => before.push(record),
            (_, false) => after.push(record),
        }
        rest = next;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(to)?);
    out.write_all(header)?;
    for r in &before {
        out.write_all(r)?;
    }
    for _ in 0..copies {
        for r in &batches {
            out.write_all(r)?;
        }
    }
    for r in &after {
        out.write_all(r)?;
    }
    out.flush()?;
    Ok(())
}

/// A redis-server on a loopback port, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Result<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Redis { child, port })
    }

    /// Requests per second of SET and GET (averaged), in a bounded run on loopback.
    fn throughput(&self) -> Result<f64> {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", "60000", "-c", "10", "-q", "-t", "set,get"])
            .output()
            .context("running redis-benchmark")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rates: Vec<f64> = text
            .split(['\r', '\n'])
            .filter_map(|l| {
                let (_, rest) = l.split_once(": ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect();
        if rates.is_empty() {
            bail!("no rates from redis-benchmark: {text}");
        }
        Ok(rates.iter().sum::<f64>() / rates.len() as f64)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds of the redis measurements: each traced run is paired with an untraced run just
/// before it, and the row gives the median rate and the median of the pairs' ratios (the
/// host's load drifts within seconds here; a ratio to one untraced run made minutes earlier
/// measured the drift).
const REDIS_ROUNDS: usize = 9;

/// What watches redis-server in one redis row.
enum Watcher {
    /// `tracer --pid` with these arguments.
    Tracer(&'static [&'static str]),
    /// `tracer` with these arguments (its target among them), attached once it says the
    /// first line starts with the second.
    Own(Vec<String>, &'static str),
    /// bpftrace with empty programs on the four slab tracepoints: what a peer pays to watch
    /// them at all, machine-wide, before its programs do anything. Its perf tracepoints build
    /// a record per hit; tracer's raw tracepoints do not.
    EmptySlabProbes,
}

/// The slab tracepoints `tracer` watches, with nothing done on them.
const EMPTY_SLAB_PROBES: &str = "tracepoint:kmem:kmem_cache_alloc {} tracepoint:kmem:kmalloc {} \
                                 tracepoint:kmem:kmem_cache_free {} tracepoint:kmem:kfree {}";

/// Starts `watcher` on `pid` and returns once it is attached.
fn start_watcher(tracer: &Path, watcher: &Watcher, pid: &str) -> Result<Child> {
    match watcher {
        Watcher::Tracer(args) => {
            let mut child = tracer_cmd(tracer, &["--pid", pid])
                .args(*args)
                .stderr(Stdio::piped())
                .spawn()?;
            let stderr = child.stderr.take().context("stderr")?;
            wait_for_line(
                stderr,
                "tracer: attached",
                "tracer did not attach to redis-server",
            )?;
            Ok(child)
        }
        Watcher::Own(args, ready) => {
            let mut child = tracer_cmd(tracer, &[])
                .args(args)
                .stderr(Stdio::piped())
                .spawn()?;
            let stderr = child.stderr.take().context("stderr")?;
            wait_for_line(stderr, ready, "tracer did not start")?;
            Ok(child)
        }
        Watcher::EmptySlabProbes => {
            let mut child = Command::new("bpftrace")
                .args(["-e", EMPTY_SLAB_PROBES])
                .stdout(Stdio::piped())
                // Its one complaint here is that it cannot raise RLIMIT_MEMLOCK, which this
                // kernel does not need; a failure to attach shows as a missing first line.
                .stderr(Stdio::null())
                .spawn()?;
            let stdout = child.stdout.take().context("stdout")?;
            wait_for_line(stdout, "Attaching", "bpftrace did not attach")?;
            // It says so as it starts attaching: perf tracepoints take milliseconds.
            std::thread::sleep(Duration::from_millis(500));
            Ok(child)
        }
    }
}

/// Waits for a watcher's first line of `output` and fails with `failure` unless it starts with
/// `prefix`. The rest is read on a thread of its own, so that the pipe stays open (a write to
/// a closed one would kill the watcher) and never fills.
fn wait_for_line<R: std::io::Read + Send + 'static>(
    output: R,
    prefix: &str,
    failure: &str,
) -> Result<()> {
    let mut lines = BufReader::new(output).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    if !first.starts_with(prefix) {
        bail!("{failure}: {first}");
    }
    std::thread::spawn(move || lines.for_each(drop));
    Ok(())
}

/// A v1 memory cgroup for the bench's redis, removed when dropped.
struct BenchCgroup(PathBuf);

impl BenchCgroup {
    fn with(pid: u32) -> Result<Self> {
        let path = PathBuf::from(format!(
            "/sys/fs/cgroup/memory/tracer-bench-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let cg = BenchCgroup(path);
        std::fs::write(cg.0.join("cgroup.procs"), pid.to_string())
            .context("moving redis-server into the bench's cgroup")?;
        Ok(cg)
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        // Its processes (redis, already ended) first go back to the root.
        if let Ok(procs) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/memory/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn redis_rows(tracer: &Path, bpftrace: bool, t: &mut Table) -> Result<()> {
    let redis = Redis::start(6390)?;
    let pid = redis.child.id().to_string();
    let cgroup = BenchCgroup::with(redis.child.id())?;
    let own =
        |args: &[&str], ready| Watcher::Own(args.iter().map(ToString::to_string).collect(), ready);
    let cg = cgroup.0.to_string_lossy().into_owned();
    let mut modes = vec![
        ("tracer --system", own(&["--system"], "tracer: counting")),
        (
            "tracer --system, empty programs (the floor there)",
            own(&["--system", "--system-empty-programs"], "tracer: counting"),
        ),
        (
            "tracer --cgroup (full)",
            own(&["--cgroup", &cg], "tracer: following"),
        ),
        (
            "tracer --pid --follow (full)",
            own(&["--pid", &pid, "--follow"], "tracer: attached"),
        ),
        ("tracer --pid (full)", Watcher::Tracer(&[])),
        (
            "tracer --pid --sample 512K",
            Watcher::Tracer(&["--sample", "512K"]),
        ),
        (
            "tracer --pid --mode kernel",
            Watcher::Tracer(&["--mode", "kernel"]),
        ),
        (
            "tracer --pid --mode kernel --no-kernel (syscalls only)",
            Watcher::Tracer(&["--mode", "kernel", "--no-kernel"]),
        ),
    ];
    if bpftrace {
        modes.push((
            "bpftrace, empty programs on the four slab tracepoints",
            Watcher::EmptySlabProbes,
        ));
    } else {
        t.note("bpftrace is not installed: its redis row is missing");
    }
    let mut untraced = Vec::new();
    let mut traced = vec![(Vec::new(), Vec::new()); modes.len()];
    for _ in 0..REDIS_ROUNDS {
        for (i, (_, watcher)) in modes.iter().enumerate() {
            let base = redis.throughput()?;
            untraced.push(base);
            let mut watching = start_watcher(tracer, watcher, &pid)?;
            let rate = redis.throughput()?;
            // SAFETY: signalling the watcher we started.
            unsafe { libc_kill(watching.id() as i32, 2) };
            watching.wait()?;
            traced[i].0.push(rate);
            traced[i].1.push(rate / base);
        }
    }
    t.add(
        "redis-server under redis-benchmark, untraced",
        median(&mut untraced),
        "req/s",
        None,
    );
    let mut rate_of = std::collections::HashMap::new();
    for ((name, _), (mut rates, mut ratios)) in modes.iter().zip(traced) {
        let rate = median(&mut rates);
        rate_of.insert(*name, rate);
        t.add_measured(
            format!("redis-server under redis-benchmark, {name}"),
            rate,
            "req/s",
            Some(median(&mut ratios)),
        );
    }
    let ratio = |a: &str, b: &str| Some(rate_of.get(a)? / rate_of.get(b)?);
    if let Some(r) = ratio(
        "tracer --system",
        "tracer --system, empty programs (the floor there)",
    ) {
        t.note(format!(
            "--system keeps {:.1}% of the throughput with empty programs on the same \
             tracepoints (target: within 3%)",
            r * 100.0
        ));
    }
    if let Some(r) = ratio("tracer --cgroup (full)", "tracer --pid --follow (full)") {
        t.note(format!(
            "--cgroup (full) keeps {:.1}% of --pid --follow's throughput on the same redis \
             (target: the same cost)",
            r * 100.0
        ));
    }
    drop(cgroup);
    t.note(format!(
        "redis rows: the median of {REDIS_ROUNDS} rounds; each traced run follows an untraced \
         one, and its ratio is the median of those pairs' ratios"
    ));
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn write_doc(machine: &str, t: &Table, n: u64) -> Result<()> {
    let mut doc = String::new();
    writeln!(doc, "# Benchmarks")?;
    writeln!(doc)?;
    writeln!(
        doc,
        "The latest `cargo xtask bench` (written by it): {n} pages a page-touch loop, {n} pairs \
         a malloc loop ({m} where no uprobe is attached, so that it runs long enough to time), \
         {RUNS} rounds in which each traced run follows an untraced one. A time is the median \
         of its {RUNS} runs; a ratio is the median of the {RUNS} ratios to the untraced run just \
         before, measured in the same run on the same machine: {machine}. Machines here are \
         shared and noisy (one untraced run differs from the next by up to a fifth): compare \
         ratios, not times.",
        m = n * MANY
    )?;
    writeln!(doc)?;
    writeln!(doc, "| measurement | value | ratio |")?;
    writeln!(doc, "|---|---:|---:|")?;
    for r in &t.rows {
        let ratio = r.ratio.map_or(String::new(), |x| format!("{x:.2}x"));
        writeln!(doc, "| {} | {:.1} {} | {ratio} |", r.what, r.value, r.unit)?;
    }
    for note in &t.notes {
        writeln!(doc, "\n_{note}._")?;
    }
    let path: PathBuf = workspace_root().join("docs/benchmarks.md");
    std::fs::create_dir_all(path.parent().context("docs")?)?;
    std::fs::write(&path, doc)?;
    println!("wrote {}", path.display());
    Ok(())
}
