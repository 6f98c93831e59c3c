//! Command-line interface: clap types turned into a validated [`Action`].

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::{
    output::Outputs,
    runtime::{RunConfig, TargetSpec},
};

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Action {
    Run(RunConfig),
    Report {
        recording: PathBuf,
        outputs: Outputs,
    },
}

const EXAMPLES: &str = "\
Examples:
  Trace one command from its first instruction and report where its memory came from:
    sudo tracer -- ./my-program --its-args

  Attach to a running process (all its threads) for 30 seconds:
    sudo tracer --pid 1234 --duration 30

  Keep the summary as JSON (schema tracer.summary/1) as well:
    sudo tracer --json summary.json -- ./my-program

  Record now, report later (on another machine, after the process is gone):
    sudo tracer --record run.trace -- ./my-program
    tracer report run.trace --json summary.json

The summary goes to stderr, so the traced program's stdout stays its own. Events lost because
the ring buffer was full are counted and reported; raise --buffer-size if that happens.
Call sites resolve to file:line where the program has debug info (build with -g; frame
pointers, -fno-omit-frame-pointer, give whole stacks, without them the direct caller).";

/// Memory-allocation tracer: follows the four paths a process's memory comes from with eBPF
/// (the malloc family and C++ new/delete; brk, mmap, munmap, mremap, mprotect, madvise; buddy
/// pages, slab objects and page faults in the kernel), joins them per call site resolved to
/// source lines, and reports where the memory came from, with leaks.
#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Command>,

    /// Trace the running process PID and all its threads, until it exits, --duration ends, or
    /// Ctrl-C. Example: --pid 1234
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<i32>,

    /// With --pid: stop tracing after SECONDS (fractions allowed). Example: --duration 2.5
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Size of the kernel-to-tracer event ring buffer, rounded up to a power of two; accepts
    /// K, M and G suffixes. Example: --buffer-size 64M
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,

    /// Also probe the allocator functions (malloc, free, ...) defined in this file; repeatable.
    /// Allocators that export the standard names (glibc, jemalloc, tcmalloc, mimalloc) are found
    /// without it. Example: --allocator-lib /opt/app/lib/libmyalloc.so
    #[arg(long, value_name = "PATH")]
    pub allocator_lib: Vec<PathBuf>,

    /// Most call sites and leaks listed in the summary (and so in the HTML, folded stacks and
    /// pprof); the largest by bytes come first. Example: --max-sites 1000
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_sites: usize,

    /// Distinct allocation stacks the kernel can keep (each takes about 1 KiB of kernel memory).
    /// Allocations beyond it are counted without a stack, and the summary says how many.
    /// Example: --max-stacks 65536
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    pub max_stacks: u32,

    /// Record the kernel stack of every buddy page and slab object the process is given, and
    /// list the kernel's top allocation paths. Costs a stack walk per kernel allocation.
    /// Example: --kernel-stacks -- ./app
    #[arg(long)]
    pub kernel_stacks: bool,

    /// Do not follow the kernel's allocators and page faults (buddy, slab, faults). Their
    /// tracepoints fire system-wide, so this makes tracing cheaper for the rest of the machine;
    /// the user-space and syscall parts are unaffected. Example: --no-kernel --pid 1234
    #[arg(long, conflicts_with = "kernel_stacks")]
    pub no_kernel: bool,

    /// Write a recording of the run to PATH, to report on later with `tracer report PATH`.
    /// Example: --record run.trace
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// More diagnostics on stderr; repeat for more (-vv).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command to start and trace, after `--`. It is held at its first instruction until every probe is
    /// attached, so nothing it does is missed; tracer exits with its exit status.
    /// Example: -- ./app --port 8080
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The reports to write; the same for a live run and for `tracer report`.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Also write the summary as JSON (schema tracer.summary/1) to PATH; `-` is stdout.
    /// Example: --json out.json
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write one self-contained HTML page (charts, flamegraphs, sortable tables of sites, leaks
    /// and slab caches, each site's chain) that works offline. Example: --html report.html
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Write SVG charts (timeline, bytes per path, sizes, kernel) and flamegraphs (allocated,
    /// live, resident bytes) into DIR. Example: --svg charts/
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,

    /// Write folded stacks of allocated bytes (flamegraph.pl, inferno, speedscope).
    /// Example: --folded alloc.folded
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write a gzipped pprof profile (alloc_objects, alloc_space, inuse_objects, inuse_space,
    /// resident_space) for go tool pprof, Pyroscope or Parca. Example: --pprof heap.pb.gz
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Do not print the summary to stderr (use with the file outputs).
    #[arg(short, long)]
    pub quiet: bool,
}

impl OutputArgs {
    fn outputs(self) -> Outputs {
        Outputs {
            text: !self.quiet,
            json: self.json,
            svg: self.svg,
            html: self.html,
            folded: self.folded,
            pprof: self.pprof,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report on a recording made with --record: the same summary and files as the live run.
    /// Example: tracer report run.trace --json summary.json
    Report {
        /// The recording.
        recording: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
}

impl Cli {
    pub fn into_action(self) -> Result<Action, clap::Error> {
        if let Some(Command::Report { recording, output }) = self.subcommand {
            return Ok(Action::Report {
                recording,
                outputs: output.outputs(),
            });
        }
        self.into_config().map(Action::Run)
    }

    pub fn into_config(self) -> Result<RunConfig, clap::Error> {
        use clap::{CommandFactory, error::ErrorKind};
        let target = match (self.pid, self.command.is_empty()) {
            (Some(pid), true) => TargetSpec::Pid(pid),
            (None, false) => TargetSpec::Command(self.command),
            _ => {
                return Err(Cli::command().error(
                    ErrorKind::MissingRequiredArgument,
                    "nothing to trace: give --pid PID or -- COMMAND [ARGS...]",
                ));
            }
        };
        if self.duration.is_some() && self.pid.is_none() {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--duration applies to --pid runs; a launched command is traced until it exits",
            ));
        }
        Ok(RunConfig {
            target,
            duration: self.duration,
            ring_bytes: self.buffer_size,
            allocator_libs: self.allocator_lib,
            max_sites: self.max_sites,
            kernel_stacks: self.kernel_stacks,
            kernel: !self.no_kernel,
            max_stacks: self.max_stacks,
            record: self.record,
            outputs: self.output.outputs(),
        })
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_buffer_size(s: &str) -> Result<u32, String> {
    let (digits, mult) = match s.trim().to_ascii_uppercase() {
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1u64 << 10),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1 << 20),
        t if t.ends_with('G') => (t[..t.len() - 1].to_string(), 1 << 30),
        t => (t, 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let bytes = n.saturating_mul(mult).max(4096).next_power_of_two();
    u32::try_from(bytes)
        .ok()
        .filter(|&b| b <= 1 << 30)
        .ok_or_else(|| format!("buffer size {s} is above the 1G limit"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, clap::Error> {
        Cli::try_parse_from(args)?.into_config()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_mode() {
        let cfg = parse(&["tracer", "--json", "o.json", "--", "ls", "-l"]).unwrap();
        match cfg.target {
            TargetSpec::Command(argv) => assert_eq!(argv, ["ls", "-l"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(cfg.outputs.json, Some(PathBuf::from("o.json")));
        assert!(cfg.outputs.text);
        assert_eq!(cfg.ring_bytes, 8 << 20);
    }

    #[test]
    fn pid_mode_with_duration() {
        let cfg = parse(&["tracer", "--pid", "12", "--duration", "1.5"]).unwrap();
        assert!(matches!(cfg.target, TargetSpec::Pid(12)));
        assert_eq!(cfg.duration, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(
            parse(&["tracer"])
                .unwrap_err()
                .to_string()
                .contains("nothing to trace")
        );
        assert!(parse(&["tracer", "--pid", "1", "--", "ls"]).is_err());
        assert!(parse(&["tracer", "--duration", "1", "--", "ls"]).is_err());
        assert!(parse(&["tracer", "--pid", "x"]).is_err());
        let err = parse(&["tracer", "--pid", "1", "--duration", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("duration must be positive"),
            "{err}"
        );
    }

    #[test]
    fn report_subcommand() {
        let cli =
            Cli::try_parse_from(["tracer", "report", "run.trace", "--json", "-", "-q"]).unwrap();
        match cli.into_action().unwrap() {
            Action::Report { recording, outputs } => {
                assert_eq!(recording, PathBuf::from("run.trace"));
                assert_eq!(outputs.json, Some(PathBuf::from("-")));
                assert!(!outputs.text);
            }
            other => panic!("{other:?}"),
        }
        // Run options do not go with the subcommand.
        assert!(Cli::try_parse_from(["tracer", "--pid", "1", "report", "x"]).is_err());
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_buffer_size("64M"), Ok(64 << 20));
        assert_eq!(parse_buffer_size("100k"), Ok(128 << 10));
        assert_eq!(parse_buffer_size("1"), Ok(4096));
        assert!(parse_buffer_size("2G").is_err());
        assert!(parse_buffer_size("lots").is_err());
    }

    #[test]
    fn help_teaches_with_examples() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--pid",
            "--duration",
            "--json",
            "--buffer-size",
            "Examples:",
            "sudo tracer -- ./my-program",
        ] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
    }
}
