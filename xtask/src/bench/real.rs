//! The bench's rows for real programs with deep stacks: Debian's sqlite3 building and querying
//! a table, Debian's python3 with every object a malloc (`PYTHONMALLOC=malloc`), and GCC's
//! cc1plus compiling a file of the standard library's headers. Each runs untraced, under
//! heaptrack and under tracer in three modes, in rounds that run every configuration once in
//! turn; a row is the median of its rounds' wall times, whole commands as a user waits for
//! them (tracer's attach, symbolization and report included, as heaptrack's are).

use std::{
    ffi::OsString,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{Table, median};
use crate::workspace_root;

/// Rounds of each program: every configuration runs once a round.
const ROUNDS: usize = 5;

/// The SQL of the sqlite3 row (and of the root test of sqlite3's stacks).
const SQL: &str = "create table t(a, b); \
    with recursive c(x) as (select 1 union all select x + 1 from c limit 20000) \
    insert into t select x, randomblob(100) from c; \
    create index i on t(b); select count(*) from t;";

/// A real program: its command and environment, and what it must print.
pub struct Program {
    pub name: &'static str,
    pub argv: Vec<OsString>,
    pub env: Vec<(&'static str, &'static str)>,
    pub prints: &'static str,
}

/// The three programs, from the workspace's `workloads/`.
pub fn programs() -> Result<Vec<Program>> {
    let workloads = workspace_root().join("workloads");
    let cc1plus = String::from_utf8(
        Command::new("g++")
            .arg("-print-prog-name=cc1plus")
            .output()
            .context("g++ -print-prog-name=cc1plus")?
            .stdout,
    )?;
    let cc1plus = cc1plus.trim();
    if !Path::new(cc1plus).is_file() {
        bail!("g++ names no cc1plus ({cc1plus:?})");
    }
    Ok(vec![
        Program {
            name: "sqlite3 (20,000 rows, an index)",
            argv: vec!["sqlite3".into(), ":memory:".into(), SQL.into()],
            env: vec![],
            prints: "20000",
        },
        Program {
            name: "python3 PYTHONMALLOC=malloc (JSON of 60,000 entries)",
            argv: vec![
                "/usr/bin/python3".into(),
                workloads.join("bench_python.py").into(),
            ],
            env: vec![("PYTHONMALLOC", "malloc")],
            prints: "60000",
        },
        Program {
            name: "cc1plus -O1 (a file of <map>, <string>, <iostream>)",
            argv: vec![
                cc1plus.into(),
                "-quiet".into(),
                "-imultiarch".into(),
                "x86_64-linux-gnu".into(),
                "-D_GNU_SOURCE".into(),
                "-O1".into(),
                workloads.join("bench_compile.cpp").into(),
                "-o".into(),
                "/dev/null".into(),
            ],
            env: vec![],
            prints: "",
        },
    ])
}

/// How one configuration runs a program: the command before the program's own argv.
struct Config {
    name: &'static str,
    prefix: Vec<OsString>,
}

fn configs(tracer: &Path, heaptrack: bool) -> Vec<Config> {
    let t = |name, args: &[&str]| Config {
        name,
        prefix: std::iter::once(tracer.as_os_str().to_owned())
            .chain(std::iter::once("-q".into()))
            .chain(args.iter().map(OsString::from))
            .chain(std::iter::once("--".into()))
            .collect(),
    };
    let mut c = vec![Config {
        name: "untraced",
        prefix: vec![],
    }];
    if heaptrack {
        let out = std::env::temp_dir().join("tracer-bench-heaptrack-real");
        c.push(Config {
            name: "heaptrack",
            prefix: vec!["heaptrack".into(), "-o".into(), out.into()],
        });
    }
    c.push(t("tracer (full)", &[]));
    c.push(t("tracer --stacks fp", &["--stacks", "fp"]));
    c.push(t("tracer --sample 512K", &["--sample", "512K"]));
    c
}

/// One run's wall time, checking what the program printed.
fn run_once(config: &Config, p: &Program) -> Result<f64> {
    let mut argv = config.prefix.iter().chain(&p.argv);
    let mut c = Command::new(argv.next().context("an empty command")?);
    c.args(argv).envs(p.env.iter().copied());
    c.stdin(Stdio::null()).stderr(Stdio::piped());
    let began = Instant::now();
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    let took = began.elapsed().as_secs_f64();
    let printed = String::from_utf8_lossy(&out.stdout);
    // heaptrack prints its own lines around the program's.
    let said = p.prints.is_empty() || printed.lines().any(|l| l.trim() == p.prints);
    if !out.status.success() || !said {
        bail!(
            "{c:?} failed ({}), printed {printed:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// The rows of every program: wall times, ratios to the untraced run, and tracer's added time
/// over heaptrack's (each round's own, then the median).
pub fn rows(tracer: &Path, heaptrack: bool, t: &mut Table) -> Result<()> {
    let configs = configs(tracer, heaptrack);
    for p in programs()? {
        // A first run of each, not timed: the files in the page cache, unwind tables built.
        for c in &configs {
            run_once(c, &p)?;
        }
        let mut times = vec![Vec::new(); configs.len()];
        for _ in 0..ROUNDS {
            for (c, times) in configs.iter().zip(&mut times) {
                times.push(run_once(c, &p)?);
            }
        }
        report(t, &p, &configs, &times);
    }
    t.note(format!(
        "Real programs: the median of {ROUNDS} rounds, each running every configuration once \
         in turn; wall times of whole commands, as a user waits for them (tracer's start, \
         symbolization and reports included, as heaptrack's are). \"added time over \
         heaptrack's\" is (tracer - untraced) / (heaptrack - untraced), each round's own, then \
         the median"
    ));
    Ok(())
}

fn report(t: &mut Table, p: &Program, configs: &[Config], times: &[Vec<f64>]) {
    let base = median(&mut times[0].clone());
    for (c, runs) in configs.iter().zip(times) {
        let wall = median(&mut runs.clone());
        let ratio = (c.name != "untraced").then_some(base);
        t.add(format!("{}, {}", p.name, c.name), wall, "s", ratio);
    }
    let Some(heaptrack) = configs.iter().position(|c| c.name == "heaptrack") else {
        return;
    };
    for (i, c) in configs.iter().enumerate() {
        if !c.name.starts_with("tracer") {
            continue;
        }
        let mut added: Vec<f64> = (0..times[0].len())
            .map(|r| (times[i][r] - times[0][r]) / (times[heaptrack][r] - times[0][r]).max(1e-3))
            .collect();
        t.add_measured(
            format!("{}: {}'s added time over heaptrack's", p.name, c.name),
            median(&mut added),
            "x",
            None,
        );
    }
}

/// Where tracer (full)'s added time goes on each program, from one run with `--costs -v`:
/// the probe programs' own run time (the kernel's bpf_stats), the stack walks within it and
/// their cost a frame, the rest of the traced phase over the untraced run (the uprobe traps:
/// the kernel's entry, exit and return trampoline, which no probe program can make cheaper),
/// tracer's start and finish, and its own CPU time.
pub fn breakdown_rows(tracer: &Path, t: &mut Table) -> Result<()> {
    let json = std::env::temp_dir().join("tracer-bench-costs.json");
    for p in programs()? {
        let untraced = Config {
            name: "untraced",
            prefix: vec![],
        };
        let mut base: Vec<f64> = (0..3)
            .map(|_| run_once(&untraced, &p))
            .collect::<Result<_>>()?;
        let base = median(&mut base) * 1e3;
        let mut c = Command::new(tracer);
        c.args(["-vv", "-q", "--costs", "--json"])
            .arg(&json)
            .arg("--")
            .args(&p.argv)
            .envs(p.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let out = c.output().with_context(|| format!("running {c:?}"))?;
        if !out.status.success() {
            bail!("{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = String::from_utf8_lossy(&out.stderr);
        let phase = |what: &str| -> Result<f64> {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("tracer: info: {what}")))
                .and_then(|rest| rest.rsplit(" in ").next())
                .and_then(duration_ms)
                .with_context(|| format!("no `{what}` phase in tracer -v's output:\n{log}"))
        };
        // `-vv`'s timings of the finish, as Rust prints durations ("48.5ms", "1.2s").
        let debug = |what: &str| -> f64 {
            log.lines()
                .filter_map(|l| l.strip_prefix("tracer: debug: "))
                .filter(|l| l.contains(what))
                .filter_map(|l| l.rsplit(" in ").next().and_then(debug_duration_ms))
                .sum()
        };
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let costs = &v["costs"];
        let f = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
        let probes = f(&costs["probes_ms"]);
        let traced = phase("traced")?;
        let name = p.name.split(" (").next().unwrap_or(p.name);
        let mut row = |what: &str, value: f64, unit: &'static str| {
            t.add(format!("{name}, tracer (full): {what}"), value, unit, None);
        };
        row("untraced run, for comparison", base, "ms");
        row(
            "start (probes loaded, unwind tables in)",
            phase("started")?,
            "ms",
        );
        row("traced phase", traced, "ms");
        row("  the probe programs (bpf_stats)", probes, "ms");
        let walks = f(&costs["unwinder"]["ms"]);
        row("    of which the stack walks", walks, "ms");
        row(
            "    the stack walks a frame",
            f(&costs["unwinder"]["ns_per_frame"]),
            "ns",
        );
        row(
            "    the rest: each call's state in a map, its event in the ring",
            probes - walks,
            "ms",
        );
        let traps = traced - base - probes;
        row(
            "  the rest over the untraced run: the uprobe traps",
            traps,
            "ms",
        );
        // Each run of an allocator program is one trap (a session's entry and return are two
        // runs of alloc_session).
        let hits: f64 = costs["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                matches!(
                    p["program"].as_str(),
                    Some("alloc_session" | "alloc_enter" | "alloc_exit" | "free_enter")
                )
            })
            .map(|p| f(&p["runs"]))
            .sum();
        row("    a trap", traps * 1e6 / hits.max(1.0), "ns");
        row(
            "finish (symbols, summary, reports)",
            phase("finished")?,
            "ms",
        );
        row(
            "  the allocator probes detached",
            debug("detached the allocator probes"),
            "ms",
        );
        row("  symbolization", debug("addresses symbolized"), "ms");
        row(
            "  the rest of the snapshot (live blocks, resident pages)",
            debug("snapshot (symbols included)") - debug("addresses symbolized"),
            "ms",
        );
        row("  the summary", debug("summary in"), "ms");
        row("  the reports written", debug("reports written"), "ms");
        row(
            "tracer's own CPU time, start to end of tracing",
            f(&costs["tracer_cpu_ms"]),
            "ms",
        );
    }
    t.note(
        "Where the time goes: one run of each program with `--costs -v`. The probe programs' \
         time is the kernel's own count (bpf_stats); the stack walks are timed inside them. What \
         is left of the traced phase over the untraced run is the uprobe traps: the kernel's \
         breakpoint, its return trampoline and their bookkeeping, a fixed price per allocator \
         call that no probe program can lower, where heaptrack's LD_PRELOAD costs a function \
         call. On programs that allocate millions of times (python3 here) the traps alone add \
         more than heaptrack's whole cost, so tracer's full mode cannot come within 1.2x of \
         heaptrack's added time there; `--sample` pays them only for the calls it samples \
         (with sessions, an unsampled call costs its entry trap only)",
    );
    Ok(())
}

/// Milliseconds in a duration as Rust's `Debug` prints it ("48.571053ms", "1.2s", "830µs").
fn debug_duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    duration_ms(&format!("{number} {unit}"))
}

/// Milliseconds in one of tracer's durations ("281.8 ms", "2.4 s", "830 µs").
fn duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let n: f64 = number.parse().ok()?;
    match unit {
        "s" => Some(n * 1e3),
        "ms" => Some(n),
        "µs" | "us" => Some(n / 1e3),
        "ns" => Some(n / 1e6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tracers_durations_and_rusts() {
        assert_eq!(duration_ms("281.8 ms"), Some(281.8));
        assert_eq!(duration_ms("2.4 s"), Some(2400.0));
        assert!((duration_ms("830 µs").unwrap() - 0.83).abs() < 1e-12);
        assert_eq!(duration_ms("2 min 3 s"), None);
        assert_eq!(debug_duration_ms("48.5ms"), Some(48.5));
        assert_eq!(debug_duration_ms("1.25s"), Some(1250.0));
        assert!((debug_duration_ms("830µs").unwrap() - 0.83).abs() < 1e-12);
        assert!((debug_duration_ms("1.592µs").unwrap() - 0.001_592).abs() < 1e-12);
        assert_eq!(debug_duration_ms("soon"), None);
    }
}
