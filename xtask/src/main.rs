//! `cargo xtask <task>`: everything needed to go from a fresh machine to a traced program.
//!
//! Every task runs `setup` first; setup is idempotent and returns in well under a second when
//! there is nothing to do.

mod bench;
mod fixtures;
mod fuzz;
mod setup;

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tracer's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready to build tracer: nightly rust-src, a bpf-linker built against
    /// nightly's own LLVM, tracefs mounted. Idempotent.
    Setup,
    /// Build tracer (release) with its eBPF programs embedded.
    Build,
    /// Build and run tracer. Without arguments, profiles the bundled demo workload.
    /// Example: cargo xtask run -- --pid 1234
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Measure what tracing costs, as ratios within one run, in one table (also written to
    /// docs/benchmarks.md): the malloc/free loop, the page-touch loop and a deep stack in each
    /// mode and under bpftrace and heaptrack, redis-server's requests/s under redis-benchmark
    /// (loopback, bounded), start and stop times, replay speed and recording size. Installs the
    /// peers from Debian's packages when missing.
    Bench {
        /// Pairs and pages per measurement.
        #[arg(long, default_value_t = 200_000)]
        n: u64,
        /// Only the rows of real programs (sqlite3, python3, cc1plus), printed and not written
        /// to docs/benchmarks.md: for trying a change.
        #[arg(long)]
        real_only: bool,
        /// Only the redis-server rows (each mode, --system, --cgroup), printed and not written:
        /// for trying a change.
        #[arg(long, conflicts_with = "real_only")]
        redis_only: bool,
    },
    /// Load a tracer HTML report in headless Chromium (installed from Debian's packages if
    /// missing): fail on any console message, save a screenshot. Without --html, reports on the
    /// demo workload first.
    HtmlCheck {
        /// The page to check.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Fuzz `tracer report` with generated hostile recordings (valid checksums, crafted
    /// contents) in two workers: fails on any panic, abort, or a worker above 200 MiB of RSS.
    /// A crashing input is saved under target/fuzz/ to replay with `tracer report`.
    Fuzz {
        /// Inputs in all.
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
        /// Seed of the generated inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Make the recordings under tracer/tests/fixtures/ again with the real probes (root),
    /// and each one's expected JSON: only when what a report says is meant to change.
    Fixtures {
        /// Only these fixtures (demo, alloc, alloc-more, kernel, follow).
        names: Vec<String>,
    },
    /// Run every test: unit tests, and the root tests that load the real eBPF programs.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test-name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::Build => build(),
        Task::Run { args } => run(args),
        Task::Test { args } => test(args),
        Task::Fixtures { names } => fixtures::run(&names),
        Task::HtmlCheck { html } => html_check(html),
        Task::Bench {
            n,
            real_only,
            redis_only,
        } => bench::run(n, real_only, redis_only),
        Task::Fuzz { runs, seed } => fuzz::run(runs, seed),
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub(crate) fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--package", "tracer"]))
}

/// Compiles a C workload from `workloads/` into `target/workloads/`.
pub(crate) fn build_workload(name: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let out_dir = root.join("target/workloads");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(name);
    status(
        Command::new("cc")
            .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&out)
            .arg(root.join("workloads").join(format!("{name}.c"))),
    )?;
    Ok(out)
}

fn run(args: Vec<OsString>) -> Result<()> {
    build()?;
    let tracer = workspace_root().join("target/release/tracer");
    let report = workspace_root().join("tracer-report.html");
    let demo = args.is_empty();
    let args = if demo {
        let demo = build_workload("demo")?;
        eprintln!("xtask: profiling the demo workload ({})", demo.display());
        vec![
            "--html".into(),
            report.clone().into_os_string(),
            "--".into(),
            demo.into_os_string(),
        ]
    } else {
        args
    };
    let status = Command::new(&tracer)
        .args(&args)
        .status()
        .with_context(|| format!("running {}", tracer.display()))?;
    if demo && status.success() {
        eprintln!(
            "xtask: wrote the report to {} (open it in a browser; it works offline)",
            report.display()
        );
    }
    std::process::exit(status.code().unwrap_or(1));
}

fn html_check(html: Option<PathBuf>) -> Result<()> {
    setup::ensure_chromium()?;
    let out = workspace_root().join("target/html-check");
    std::fs::create_dir_all(&out)?;
    let pages = match html {
        Some(page) => vec![page],
        None => {
            build()?;
            let demo = build_workload("demo")?;
            let tracer = workspace_root().join("target/release/tracer");
            let page = out.join("report.html");
            status(
                Command::new(&tracer)
                    .args(["-q", "--html"])
                    .arg(&page)
                    .arg("--")
                    .arg(&demo),
            )?;
            // A --follow page: the process table, its selector and a view per process.
            let follow = out.join("follow.html");
            let twice = format!("{0}; {0}", demo.display());
            status(
                Command::new(&tracer)
                    .args(["-q", "--follow", "--html"])
                    .arg(&follow)
                    .args(["--", "sh", "-c", &twice]),
            )?;
            // A page of 10,000 sites (many_sites: 16,384 stacks), timed as it loads, sorts
            // and filters.
            let many = build_workload("many_sites")?;
            let big = out.join("many.html");
            status(
                Command::new(&tracer)
                    .args(["-q", "--no-kernel", "--max-sites", "10000", "--html"])
                    .arg(&big)
                    .arg("--")
                    .arg(&many)
                    .args(["14", "1"]),
            )?;
            vec![page, follow, big]
        }
    };
    // At a desktop's width and at 800 px: the page never scrolls sideways, numbers never wrap.
    for page in &pages {
        for width in [1280, 800] {
            check_page(&out, page, width)?;
        }
    }
    // The check can fail: the first page with its flamegraph frames at a fixed 520 px (as
    // they once were) must not pass.
    let html = std::fs::read_to_string(&pages[0])?;
    let mut broken = String::new();
    let mut rest = html.as_str();
    while let Some(at) = rest.find("style=\"height:") {
        broken.push_str(&rest[..at]);
        broken.push_str("style=\"height:520px\"");
        rest = &rest[at..];
        rest = &rest[rest[14..].find('"').map_or(rest.len(), |e| e + 15)..];
    }
    broken.push_str(rest);
    if broken == html {
        bail!("{} has no flamegraph frame to break", pages[0].display());
    }
    let bad = out.join("broken.html");
    std::fs::write(&bad, broken)?;
    match check_page(&out, &bad, 1280) {
        Err(e) if format!("{e:#}").contains("LAYOUT-FAIL flame-") => {
            println!("xtask html-check: a page with oversized flamegraph frames fails, as it must");
        }
        Err(e) => bail!("the broken page failed for another reason: {e:#}"),
        Ok(()) => bail!("the layout check passed a page with oversized flamegraph frames"),
    }
    Ok(())
}

/// Runs headless Chromium on `page` and returns its log, and whether it had to be killed.
/// Headless Chromium with `--virtual-time-budget` now and then never exits (CI saw one hang
/// for the whole two minutes on a page that loads in 8 s here). A run that hangs after the
/// page logged its verdict and the screenshot was written has done its work; one that hangs
/// before is tried again, twice at most.
fn run_chromium(out: &Path, page: &Path, shot: &Path, width: u32) -> Result<(String, bool)> {
    const TRIES: u32 = 3;
    for attempt in 1..=TRIES {
        let _ = std::fs::remove_file(shot);
        let profile = out.join("chromium-profile");
        let _ = std::fs::remove_dir_all(&profile);
        let result = Command::new("timeout")
            .args(["-k", "10", "120", "chromium", "--headless", "--no-sandbox"])
            .args(["--disable-gpu", "--disable-quic", "--disable-dev-shm-usage"])
            .args([
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args(["--disable-sync", "--enable-logging=stderr", "--log-level=0"])
            .arg("--virtual-time-budget=5000")
            .arg(format!("--window-size={width},2400"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("file://{}", page.display()))
            .output()
            .context("running chromium")?;
        let log = String::from_utf8_lossy(&result.stderr).into_owned();
        if result.status.success() {
            return Ok((log, false));
        }
        // `timeout` exits 124 when it ended chromium, 137 when it had to kill it.
        let killed = matches!(result.status.code(), Some(124 | 137));
        let verdict = log
            .lines()
            .any(|l| l.contains(":CONSOLE") && l.contains("LAYOUT-"));
        let drawn = std::fs::metadata(shot).is_ok_and(|m| m.len() > 0);
        if killed && verdict && drawn {
            return Ok((log, true));
        }
        if !killed || attempt == TRIES {
            bail!(
                "chromium failed on {} at {width} px ({}, try {attempt} of {TRIES}):\n{log}",
                page.display(),
                result.status
            );
        }
        println!(
            "xtask html-check: chromium hung on {} at {width} px before drawing it (try \
             {attempt} of {TRIES}); trying again",
            page.display()
        );
    }
    unreachable!("the last try returns or fails")
}

/// Measures the layout as the browser draws it (see layout.js): run in a copy of the page.
const LAYOUT_CHECK: &str = include_str!("layout.js");

/// Loads `page` in headless Chromium, `width` pixels wide, with the layout check: no console
/// message but the check's verdict, which must be "LAYOUT-OK", and a screenshot with content.
fn check_page(out: &Path, page: &Path, width: u32) -> Result<()> {
    let page = std::fs::canonicalize(page).with_context(|| format!("{}", page.display()))?;
    let html = std::fs::read_to_string(&page).with_context(|| format!("{}", page.display()))?;
    let at = html.rfind("</body>").context("the page has no </body>")?;
    let checked = out.join(format!(
        "{}.checked.html",
        page.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(
        &checked,
        format!(
            "{}<script>{LAYOUT_CHECK}</script>{}",
            &html[..at],
            &html[at..]
        ),
    )?;
    let page = checked;
    let shot = out.join(format!(
        "{}-{width}.png",
        page.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let (log, hung) = run_chromium(out, &page, &shot, width)?;
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    if hung {
        println!(
            "xtask html-check: {} at {width} px: chromium hung after drawing the page (a known \
             headless fault with --virtual-time-budget); its log and screenshot are checked",
            page.display()
        );
    }
    let verdict = console.iter().find(|l| l.contains("LAYOUT-OK"));
    // The check's timings: how long the page took to load, sort and filter.
    for line in console.iter().filter(|l| l.contains("TIMING ")) {
        let timing = line.split("TIMING ").nth(1).unwrap_or_default();
        println!(
            "xtask html-check: {} at {width} px: {}",
            page.display(),
            timing.split('"').next().unwrap_or_default()
        );
    }
    let others: Vec<&&str> = console
        .iter()
        .filter(|l| !l.contains("LAYOUT-OK") && !l.contains("TIMING "))
        .collect();
    if !others.is_empty() || verdict.is_none() {
        bail!(
            "the page logged to the console (or the layout check did not pass):\n{}",
            console.join("\n")
        );
    }
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    if size < 10_000 {
        bail!(
            "no screenshot, or an empty one ({size} bytes) at {}",
            shot.display()
        );
    }
    println!(
        "xtask html-check: {} loaded with no console messages, layout {}; screenshot {}",
        page.display(),
        verdict
            .and_then(|l| l.split("LAYOUT-OK ").nth(1))
            .map_or("?", |n| n.split('"').next().unwrap_or("?"))
            .to_string()
            + " checks passed",
        shot.display()
    );
    Ok(())
}

fn test(args: Vec<OsString>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the tests load eBPF programs and must run as root: sudo -E cargo xtask test");
    }
    setup::ensure_test_tools()?;
    // Doc tests are left out: the crates have none, and their empty runs would close the log.
    // Every test binary runs even after one fails, so the count covers all of them.
    let mut child = cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--no-fail-fast",
        ])
        .args(["--lib", "--bins", "--tests", "--"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count_before(rest, " passed");
            failed += count_before(rest, " failed");
        }
    }
    let status = child.wait()?;
    println!("xtask test: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// The number just before `label` in a libtest summary such as `ok. 28 passed; 0 failed; ...`.
fn count_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().strip_suffix(label.trim_start()))
        .and_then(|n| n.trim().rsplit([' ', '.']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    pub(crate) fn libc_geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn parses_libtest_summaries() {
        let s = "ok. 28 passed; 3 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.06s";
        assert_eq!(count_before(s, " passed"), 28);
        assert_eq!(count_before(s, " failed"), 3);
        assert_eq!(count_before("FAILED. 2 passed; 1 failed;", " passed"), 2);
    }
}
