//! `cargo xtask <task>`: everything needed to go from a fresh machine to a traced program.
//!
//! Every task runs `setup` first; setup is idempotent and returns in well under a second when
//! there is nothing to do.

mod setup;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
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
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--package", "tracer"]))
}

/// Compiles a C workload from `workloads/` into `target/workloads/`.
fn build_workload(name: &str) -> Result<PathBuf> {
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
    let args = if args.is_empty() {
        let demo = build_workload("demo")?;
        eprintln!("xtask: profiling the demo workload ({})", demo.display());
        vec!["--".into(), demo.into_os_string()]
    } else {
        args
    };
    let status = Command::new(&tracer)
        .args(&args)
        .status()
        .with_context(|| format!("running {}", tracer.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test(args: Vec<OsString>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the tests load eBPF programs and must run as root: sudo -E cargo xtask test");
    }
    setup::ensure_test_tools()?;
    status(
        cargo()
            .args(["test", "--workspace", "--exclude", "tracer-ebpf", "--"])
            .args(args),
    )
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
