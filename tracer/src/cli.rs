//! Command-line interface: clap types turned into a validated [`RunConfig`].

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{ArgAction, Parser};

use crate::runtime::{RunConfig, TargetSpec};

const EXAMPLES: &str = "\
Examples:
  Trace one command from its first instruction and report where its memory came from:
    sudo tracer -- ./my-program --its-args

  Attach to a running process (all its threads) for 30 seconds:
    sudo tracer --pid 1234 --duration 30

  Keep the summary as JSON (schema tracer.summary/1) as well:
    sudo tracer --json summary.json -- ./my-program

The summary goes to stderr, so the traced program's stdout stays its own. Events lost because
the ring buffer was full are counted and reported; raise --buffer-size if that happens.
Call sites resolve to file:line where the program has debug info (build with -g; frame
pointers, -fno-omit-frame-pointer, give whole stacks, without them the direct caller).";

/// Memory-allocation tracer: follows a process's malloc family and C++ new/delete calls
/// (uprobes) and its brk, mmap, munmap and mremap calls (kernel tracepoints) with eBPF, and
/// reports where its memory came from: per call site, resolved to source lines, with leaks.
#[derive(Debug, Parser)]
#[command(name = "tracer", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Trace the running process PID and all its threads, until it exits, --duration ends, or
    /// Ctrl-C. Example: --pid 1234
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<i32>,

    /// With --pid: stop tracing after SECONDS (fractions allowed). Example: --duration 2.5
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Also write the summary as JSON (schema tracer.summary/1) to PATH; `-` is stdout.
    /// Example: --json out.json
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Size of the kernel-to-tracer event ring buffer, rounded up to a power of two; accepts
    /// K, M and G suffixes. Example: --buffer-size 64M
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,

    /// Also probe the allocator functions (malloc, free, ...) defined in this file; repeatable.
    /// Allocators that export the standard names (glibc, jemalloc, tcmalloc, mimalloc) are found
    /// without it. Example: --allocator-lib /opt/app/lib/libmyalloc.so
    #[arg(long, value_name = "PATH")]
    pub allocator_lib: Vec<PathBuf>,

    /// Most call sites and leaks listed in the summary.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_sites: usize,

    /// Record the kernel stack of every buddy page and slab object the process is given, and
    /// list the kernel's top allocation paths. Costs a stack walk per kernel allocation.
    #[arg(long)]
    pub kernel_stacks: bool,

    /// Do not follow the kernel's allocators and page faults (buddy, slab, faults). Their
    /// tracepoints fire system-wide, so this makes tracing cheaper for the rest of the machine;
    /// the user-space and syscall parts are unaffected.
    #[arg(long, conflicts_with = "kernel_stacks")]
    pub no_kernel: bool,

    /// Do not print the summary to stderr (use with --json).
    #[arg(short, long)]
    pub quiet: bool,

    /// More diagnostics on stderr; repeat for more (-vv).
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// The command to start and trace, after `--`. It is held at its first instruction until every probe is
    /// attached, so nothing it does is missed; tracer exits with its exit status.
    /// Example: -- ./app --port 8080
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl Cli {
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
            json: self.json,
            ring_bytes: self.buffer_size,
            quiet: self.quiet,
            allocator_libs: self.allocator_lib,
            max_sites: self.max_sites,
            kernel_stacks: self.kernel_stacks,
            kernel: !self.no_kernel,
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
        assert_eq!(cfg.json, Some(PathBuf::from("o.json")));
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
