//! `cargo xtask fixtures`: makes the recordings under `tracer/tests/fixtures/` again with the
//! real probes (root), and each one's expected JSON from its replay. The non-root test
//! `tracer/tests/recordings.rs` replays them and compares.
//!
//! Made again only when what a report says is meant to change: say why in the commit.

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::{build, build_workload, status, workspace_root};

/// (fixture name, tracer options, workload, its arguments).
const FIXTURES: [(&str, &[&str], &str, &[&str]); 5] = [
    ("demo", &[], "demo", &[]),
    ("alloc", &[], "alloc", &["3"]),
    ("alloc-more", &[], "alloc", &["5"]),
    ("kernel", &["--mode", "kernel"], "alloc", &["3"]),
    ("follow", &["--follow"], "forker", &[]),
];

/// Makes the fixtures named in `only` (all of them when it is empty).
pub fn run(only: &[String]) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { crate::libc_geteuid() } != 0 {
        bail!("making the fixtures loads eBPF programs: run as root");
    }
    build()?;
    let root = workspace_root();
    let tracer = root.join("target/release/tracer");
    let out = root.join("tracer/tests/fixtures");
    std::fs::create_dir_all(&out)?;
    if let Some(unknown) = only
        .iter()
        .find(|n| !FIXTURES.iter().any(|(name, ..)| name == n))
    {
        bail!("no fixture {unknown}: they are {:?}", FIXTURES.map(|f| f.0));
    }
    for (name, options, workload, args) in FIXTURES {
        if !only.is_empty() && !only.iter().any(|n| n == name) {
            continue;
        }
        let program = build_workload(workload)?;
        let dir = program.parent().expect("a workload lives in a directory");
        let trace = out.join(format!("{name}.trace"));
        status(
            Command::new(&tracer)
                .current_dir(dir)
                .arg("-q")
                .args(options)
                .arg("--record")
                .arg(&trace)
                .arg("--")
                .arg(Path::new(".").join(workload))
                .args(args),
        )?;
        status(
            Command::new(&tracer)
                .arg("report")
                .arg(&trace)
                .args(["-q", "--json"])
                .arg(out.join(format!("{name}.expected.json"))),
        )?;
        eprintln!("xtask: made tests/fixtures/{name}.trace");
    }
    Ok(())
}
