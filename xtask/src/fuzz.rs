//! `cargo xtask fuzz`: runs `tracer-fuzz` in two workers over disjoint inputs and judges them.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, status, workspace_root};

/// The most RSS a worker may reach, in KiB.
const MAX_RSS_KIB: u64 = 200 << 10;
const WORKERS: u64 = 2;

struct Outcome {
    /// The last input known to have run, and the worker's closing line, if it got there.
    progress: u64,
    done: Option<String>,
    exit: std::process::ExitStatus,
}

fn worker(bin: &Path, seed: u64, start: u64, count: u64, extra: &[&str]) -> Result<Outcome> {
    let mut child = Command::new(bin)
        .args(["--seed", &seed.to_string(), "--start", &start.to_string()])
        .args(["--count", &count.to_string()])
        .args(extra)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut progress = start;
    let mut done = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("progress ") {
            progress = n.parse().unwrap_or(progress);
        } else if line.starts_with("done ") {
            done = Some(line);
        }
    }
    Ok(Outcome {
        progress,
        done,
        exit: child.wait()?,
    })
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn run(runs: u64, seed: u64) -> Result<()> {
    status(cargo().args(["build", "--profile", "fuzz", "--package", "tracer-fuzz"]))?;
    let bin = workspace_root().join("target/fuzz/tracer-fuzz");
    let per = runs.div_ceil(WORKERS);
    println!("fuzzing tracer report: {runs} inputs (seed {seed}) in {WORKERS} workers");
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let bin = bin.clone();
            std::thread::spawn(move || worker(&bin, seed, w * per, per, &[]))
        })
        .collect();
    let mut failures = Vec::new();
    let (mut inputs, mut replayed, mut max_rss) = (0, 0, 0);
    for (w, handle) in handles.into_iter().enumerate() {
        let outcome = handle.join().expect("worker thread")?;
        match &outcome.done {
            Some(line) => {
                inputs += field(line, "inputs");
                replayed += field(line, "replayed");
                max_rss = max_rss.max(field(line, "max_rss_kib"));
                if field(line, "panics") > 0 {
                    failures.push(format!(
                        "worker {w}: {} inputs panicked (saved under target/fuzz/)",
                        field(line, "panics")
                    ));
                }
            }
            None => {
                // Died without its closing line (an abort, a stack overflow): find the input
                // by running its last stretch again, saving each input before it runs.
                let from = outcome.progress;
                let save = workspace_root().join("target/fuzz/last-input");
                let save = save.to_string_lossy();
                let again = worker(&bin, seed, from, 10_000, &["--save-each", &save])?;
                failures.push(format!(
                    "worker {w} died ({}) after input {from}; the input that killed it (rerun: {}) \
                     is {save}/current.trace",
                    outcome.exit, again.exit
                ));
            }
        }
    }
    println!(
        "fuzz: {inputs} inputs, {replayed} replayed to a summary, max RSS {:.1} MiB",
        max_rss as f64 / 1024.0
    );
    if max_rss > MAX_RSS_KIB {
        failures.push(format!(
            "a worker reached {:.1} MiB of RSS (limit {} MiB)",
            max_rss as f64 / 1024.0,
            MAX_RSS_KIB >> 10
        ));
    }
    if !failures.is_empty() {
        bail!("fuzzing failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
