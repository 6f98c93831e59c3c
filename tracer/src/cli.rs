//! Command-line interface: clap types turned into a validated [`Action`].

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::{
    diff::gate::Gate,
    output::Outputs,
    probes::{kernel::KernelProbes, uprobes::UprobeLinks},
    report::Format,
    runtime::{Mode, RunConfig, StackWalk, TargetSpec},
};

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Action {
    Run(Box<RunConfig>),
    Report {
        recording: PathBuf,
        outputs: Outputs,
    },
    Diff(DiffArgs),
}

/// `tracer diff`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The baseline: a recording or a tracer.summary/1 JSON file.
    pub before: PathBuf,
    /// The run to compare with it.
    pub after: PathBuf,
    /// Also write the comparison as JSON (schema tracer.diff/1); `-` is stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also write it as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit with status 3 if CONDITION holds: `METRIC OP VALUE`, where VALUE is the
    /// metric in AFTER (`leaked_bytes>0`), its change from BEFORE (`mmap_bytes>+1M`), or
    /// the change in percent (`live_bytes>+10%`, `allocs>+5%`). Repeatable. Metrics as
    /// for a run's --fail-if (see `tracer --help`).
    #[arg(long, value_name = "CONDITION", value_parser = parse_gate)]
    pub fail_if: Vec<Gate>,
    /// Do not print the comparison on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

const EXAMPLES: &str = "\
Examples:
  Trace one command from its first instruction and report where its memory came from:
    sudo tracer -- ./my-program --its-args

  Attach to a running process (all its threads) for 30 seconds:
    sudo tracer --pid 1234 --duration 30

  On a busy service, no uprobes: what reaches the kernel (brk, mmap, faults, pages, slab), each
  with the code behind it; allocations that stay in the allocator cost nothing:
    sudo tracer --mode kernel --fault-stacks --pid 1234 --duration 60

  Keep the summary as JSON (schema tracer.summary/1) as well:
    sudo tracer --json summary.json -- ./my-program

  Record now, report later (on another machine, after the process is gone):
    sudo tracer --record run.trace -- ./my-program
    tracer report run.trace --json summary.json

  Watch a service while it runs: a summary every 5 s (and as JSON lines), or an interactive view;
  `kill -USR1 <tracer>` writes every report as of now:
    sudo tracer --pid 1234 --interval 5 --jsonl live.jsonl
    sudo tracer top --pid 1234

  Serve it to Prometheus and pprof scrapers (go tool pprof, Parca, Pyroscope):
    sudo tracer --pid 1234 --mode kernel --listen 127.0.0.1:9464

  A container's processes (a cgroup of either hierarchy), each OOM kill's report written then:
    sudo tracer --cgroup /sys/fs/cgroup/memory/app --on-oom /var/tmp/oom --duration 600

  The whole machine, counted in the kernel: which processes and cgroups grow:
    sudo tracer top --system

  Compare two runs, and fail CI on memory:
    tracer diff before.trace after.trace --fail-if 'live_bytes>+10%'
    sudo tracer --fail-if 'lost_bytes>0' -- ./run-tests

The summary goes to stderr, so the traced program's stdout stays its own. Events lost because
the ring buffer was full are counted and reported; raise --buffer-size if that happens.
Call sites resolve to file:line where the program has debug info (build with -g). Stacks are
walked with each file's unwind tables, so code built without frame pointers has whole stacks
too (--stacks fp walks frame pointers only).

Privilege: tracer needs root (or CAP_BPF, CAP_PERFMON and read access to tracefs). Under sudo,
the command runs as the user who ran sudo (their uid, groups, HOME; no capabilities), not as
root; --run-as-root keeps root for it.

Output files: every destination is checked before anything starts. `-` is stdout (for one
output at most). A character device or FIFO (/dev/null, a named pipe) is written through; a
regular file is replaced atomically (a temporary file in the same directory, renamed over it);
a symlink is followed only if it belongs to root or to you. Under sudo, new files belong to you.

Exit status: the command's own (128+N when signal N ended it); 0 after a --pid run. If a report
could not be written (a full disk), the others still are, the failure is named, and the status
is 74 when the command itself succeeded (its own status otherwise); 3 when a --fail-if condition
held (and the command succeeded). 1 for tracer's own errors, 2 for usage errors, 126 and 127 for
a command that cannot run or is not found.";

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

    /// With --pid: trace the allocator calls of this one thread only (syscalls, faults and the
    /// kernel's side stay the whole process's). Example: --pid 1234 --tid 1240
    #[arg(long, value_name = "TID", requires = "pid", conflicts_with = "follow", value_parser = clap::value_parser!(u32).range(1..))]
    pub tid: Option<u32>,

    /// Trace the processes the target creates too (fork, vfork, clone without CLONE_THREAD),
    /// theirs, and every program they run; the run lasts until all of them have exited. The
    /// reports give the totals and each process (JSON `processes`, a table in the text, a
    /// process selector in the HTML). Without it, children run untraced and the summary says
    /// how many. With --pid, processes the target had started before tracer attached are not
    /// traced (they are named). Each followed process is stopped for a moment at every exec while its new
    /// image is read. The allocator probes then fire in every process mapping the same files
    /// (the kernel filters out the untraced ones, each paying a trap per call).
    /// Example: tracer --follow -- make -j2
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Trace every process in the cgroup at PATH and in its child cgroups: those in it now,
    /// those they create, and those moved in later (found within a second). The run lasts
    /// until --duration ends, Ctrl-C, or the cgroup is removed. PATH is the cgroup's
    /// directory in either hierarchy: /sys/fs/cgroup/memory/NAME (a v1 memory cgroup) or
    /// /sys/fs/cgroup/unified/NAME (v2; /sys/fs/cgroup/NAME where v2 is the only one). The
    /// reports give each process (as --follow does), their totals, and the kernel's own
    /// numbers for the cgroup: usage and limit, memory.stat, memory.events and pressure.
    /// Example: sudo tracer --cgroup /sys/fs/cgroup/memory/app --duration 60
    #[arg(long, value_name = "PATH", conflicts_with_all = ["command", "pid"])]
    pub cgroup: Option<PathBuf>,

    /// Count every process on the machine in the kernel, none sent as an event, so that it
    /// can stay on: memory syscalls, user page faults, page blocks (each free counted to the
    /// process that allocated the block, wherever it is freed) and slab objects. The reports,
    /// `tracer top --system` and /metrics rank the processes and memory cgroups that grew most
    /// and the largest (the top 20 of each, the rest as `other`); its reports are the text and
    /// --json. Until --duration ends or Ctrl-C.
    /// Example: sudo tracer --system --duration 60 --json machine.json
    #[arg(long, conflicts_with_all = [
        "command", "pid", "cgroup", "follow", "mode", "sample", "record", "interval", "jsonl",
        "tid", "on_pressure", "leak_check", "fail_if",
    ])]
    pub system: bool,

    /// With --system: attach programs that return at once instead (what any program on those
    /// tracepoints costs; for the bench).
    #[arg(long, hide = true, requires = "system")]
    pub system_empty_programs: bool,

    /// When the kernel's OOM killer chooses a traced process, write its report into DIR at
    /// once, as oom-TIME-PID-COMM.json and .txt: its timeline, largest and growing sites and
    /// leak suspects, its oom_score_adj and memory then and, with --cgroup, the cgroup's
    /// limit, events, pressure and other processes. Tracing goes on. Default: the directory
    /// of the first -o file, else the current one. Example: --on-oom /var/tmp/oom
    #[arg(long, value_name = "DIR")]
    pub on_oom: Option<PathBuf>,

    /// Write a snapshot of every report (as SIGUSR1 does) when memory pressure rises above a
    /// threshold: KIND WINDOW>PERCENT, KIND `some` (some task waited for memory) or `full`
    /// (all did), WINDOW `avg10` or `avg60` (the kernel's averages over 10 s and 60 s). The
    /// cgroup's own pressure with a v2 --cgroup, else the machine's (/proc/pressure/memory);
    /// checked every second, once per rise. With --cgroup, a snapshot is also written whenever
    /// the cgroup's memory.events high count rises. Example: --on-pressure 'some avg10>20'
    #[arg(long, value_name = "EXPR")]
    pub on_pressure: Option<crate::process::cgroup::PressureTrigger>,

    /// With --on-pressure: the pressure file to watch instead, such as a v2 cgroup's
    /// memory.pressure while tracing one of its processes with --pid.
    /// Example: --pressure-file /sys/fs/cgroup/app/memory.pressure
    #[arg(long, value_name = "FILE", requires = "on_pressure")]
    pub pressure_file: Option<PathBuf>,

    /// With --pid or --cgroup: stop tracing after SECONDS (fractions allowed, at most a year).
    /// Example: --duration 2.5
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Size of the kernel-to-tracer event ring buffer, rounded up to a power of two; accepts
    /// K, M and G suffixes. Example: --buffer-size 64M
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_buffer_size)]
    pub buffer_size: u32,

    /// Also probe the allocator functions (malloc, free, ...) defined in this file; repeatable.
    /// Allocators that export the standard names (glibc, jemalloc, tcmalloc, mimalloc) are found
    /// without it. Example: --allocator-lib /opt/app/lib/libmyalloc.so
    #[arg(long, value_name = "PATH", value_parser = parse_regular_file)]
    pub allocator_lib: Vec<PathBuf>,

    /// Most call sites, leaks and leak suspects listed in the JSON, the HTML and the SVG
    /// charts (200 without it); the largest by bytes come first. Folded stacks and pprof, for
    /// tools that aggregate, hold every site. Given, the text lists that many too (else ten).
    /// Example: --max-sites 1000
    #[arg(long, value_name = "N")]
    pub max_sites: Option<usize>,

    /// A function of the program's own that wraps the allocator (a regular expression over
    /// demangled names; repeatable): like malloc itself and the languages' allocation glue
    /// (Rust's alloc::, libstdc++'s allocators), it is plumbing, and sites are named by their
    /// first frame outside it. Example: --wrapper '^(zmalloc|zcalloc|ztrymalloc_usable)'
    #[arg(long, value_name = "REGEX", value_parser = parse_wrapper)]
    pub wrapper: Vec<String>,

    /// How allocation stacks are walked: `dwarf` (the default) reads each file's unwind tables
    /// (.eh_frame) into the kernel and walks with them, so code built without frame pointers
    /// (most distribution binaries) gets its whole stack, frame pointers where a file has no
    /// table. Files loaded later (an exec, dlopen) are read on a worker thread while the process
    /// waits at the mapping, at most 2 s. `fp` follows frame pointers only, and a stack ends
    /// where code built without them begins: cheaper per allocation on deep stacks (about 75 ns
    /// a frame, against 110). Example: --stacks fp
    #[arg(long, value_enum, default_value_t = StackWalk::Dwarf)]
    pub stacks: StackWalk,

    /// Distinct allocation stacks the kernel can keep, its memory set aside when tracing
    /// starts: about 0.5 KiB a stack when they are unwound, 1 KiB with --stacks fp. By default
    /// sized from the target's code (a stack per 256 bytes of its executable segments, from
    /// 65,536, about 32 MiB, to 262,144): a small C++ compile keeps tens of thousands.
    /// Allocations beyond it keep their calling frame only (`stack_lost`), and the summary
    /// says how many. Example: --max-stacks 262144
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(64..=1 << 22))]
    pub max_stacks: Option<u32>,

    /// Measure what tracing costs the traced program, and say it (`costs` in the JSON, a
    /// line in the text): the kernel's run time of each probe program (bpf_stats, enabled
    /// for the run), the stack walks' time per frame, and tracer's own CPU time. Timing
    /// itself adds about 50 ns a probe run. Example: --costs
    #[arg(long)]
    pub costs: bool,

    /// Walk stacks without the unwinder's caches (each frame's row searched for, its words
    /// read alone): slower, the same stacks (for checking that the caches change none).
    #[arg(long, hide = true)]
    pub no_unwind_cache: bool,

    /// What to trace. `full`: every call of the allocator family through uprobes, joined with
    /// the kernel's side; about 4 µs per malloc/free pair. `kernel`: no uprobes at all, so
    /// allocations that do not reach the kernel cost nothing: the memory syscalls with the user
    /// stacks that made them (for brk, the malloc that grew the heap), page faults (by stack
    /// with --fault-stacks), buddy pages and slab objects; no per-allocation sites or leaks.
    /// A page's first touch costs about a quarter more; the kmem tracepoints fire for the whole
    /// machine, so a busy host pays for its slab traffic (redis under load kept about 0.9x of
    /// its requests/s; with --no-kernel, syscalls only, about 0.97x).
    /// Example: --mode kernel --pid 1234
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,

    /// Record the user stack of every page fault and list faults by the code that touched the
    /// memory. Costs a stack walk per fault. Example: --mode kernel --fault-stacks -- ./app
    #[arg(long, conflicts_with = "no_kernel")]
    pub fault_stacks: bool,

    /// Sample allocations instead of tracing every call: one per BYTES allocated on average
    /// (a Poisson process over each thread's bytes, as tcmalloc and jemalloc heap profilers
    /// do), with every count and size scaled to an estimate and its 95% error shown. An
    /// unsampled call costs one uprobe hit and sends nothing; frees of unsampled blocks send
    /// nothing. Example: --sample 512K --pid 1234
    #[arg(long, value_name = "BYTES", value_parser = parse_sample_bytes)]
    pub sample: Option<u32>,

    /// How the allocator uprobes attach. `auto` takes the best this kernel offers: `session`
    /// (Linux 6.13+: one program per call, its return probed only for outermost calls),
    /// `multi` (Linux 6.6+: all of a file's functions attach and detach as one link), or
    /// `single` (one uprobe per function, slow to attach and detach). All see the same calls.
    /// Example: --uprobe-links single
    #[arg(long, value_enum, value_name = "KIND", default_value_t = UprobeLinks::Auto)]
    pub uprobe_links: UprobeLinks,

    /// How the syscall, task, kmem and fault programs attach. `auto`: the task, kmem and fault
    /// programs as raw tracepoints where this kernel's BTF shows the prototypes they know
    /// (Linux 6.1+), so a kmem hit outside the traced process costs a pid check, and the
    /// syscalls as perf tracepoints, one per traced syscall (each waits for a grace period when
    /// closed: a helper process does that after tracer exits). `raw`: the syscalls too, as
    /// raw_syscalls sys_enter/sys_exit (x86-64), which detach at once, but every syscall of the
    /// machine runs a program while tracing (about +0.16 µs here, against +0.07 µs). `perf`:
    /// tracefs records for all, on any kernel. All see the same events.
    /// Example: --kernel-probes raw -- ./test
    #[arg(long, value_enum, value_name = "KIND", default_value_t = KernelProbes::Auto)]
    pub kernel_probes: KernelProbes,

    /// Record the kernel stack of every buddy page and slab object the process is given, and
    /// list the kernel's top allocation paths. Costs a stack walk per kernel allocation, and an
    /// event per slab object (otherwise objects made outside traced calls are counted in the
    /// kernel, per cache).
    /// Example: --kernel-stacks -- ./app
    #[arg(long)]
    pub kernel_stacks: bool,

    /// Do not follow the kernel's allocators and page faults (buddy, slab, faults). Their
    /// tracepoints fire system-wide, so this makes tracing cheaper for the rest of the machine;
    /// the user-space and syscall parts are unaffected. Example: --no-kernel --pid 1234
    #[arg(long, conflicts_with = "kernel_stacks")]
    pub no_kernel: bool,

    /// Every SECONDS while tracing, print what changed on stderr: the four paths (this
    /// interval and totals), live and resident bytes, the sites with the most live bytes and
    /// their growth, leak suspects, drops. Redrawn in place on a terminal, appended (each block
    /// headed by a UTC timestamp) otherwise. Example: --interval 5 --pid 1234
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// With --interval: also write each interval as one JSON line (schema tracer.interval/1:
    /// t_ms, interval_ms, events, paths, paths_delta, live_bytes, resident_bytes, sites with
    /// live_delta_bytes, leak_suspects) to PATH, visible from the first line (tail -f works);
    /// the last line, "final": true, is taken as the run ends. `-` is stdout.
    /// Example: --interval 1 --jsonl live.jsonl
    #[arg(long, value_name = "PATH", requires = "interval")]
    pub jsonl: Option<PathBuf>,

    /// With --jsonl to a file: keep it within about BYTES (K, M, G suffixes, at least 1M) on a
    /// long run: past BYTES it keeps its newest whole lines within half of them, rewritten
    /// from its start (`tail -F` follows it). Example: --jsonl live.jsonl --jsonl-max 64M
    #[arg(long, value_name = "BYTES", requires = "jsonl", value_parser = parse_record_max)]
    pub jsonl_max: Option<u64>,

    /// Leaks count only blocks at least SECONDS old when the report is made (as memleak's -o):
    /// what a long-running process has just allocated and will free soon is not a leak.
    /// Example: --min-age 30 --pid 1234
    #[arg(long, value_name = "SECONDS", value_parser = parse_min_age)]
    pub min_age: Option<Duration>,

    /// Check for leaks the way memcheck does, on a process that goes on running: when tracing
    /// ends (Ctrl-C, --duration), every thread is stopped for a moment, the process's memory
    /// is scanned for pointers to its live blocks, and each block is called lost, indirectly
    /// lost, possibly lost or still reachable (the pause is reported). SIGUSR2 runs a check
    /// at any time. A launched or followed process is checked at its exit without this
    /// option. Example: --pid 1234 --duration 60 --leak-check
    #[arg(long, conflicts_with = "no_leak_check")]
    pub leak_check: bool,

    /// Leaks known and accepted, in LeakSanitizer's format: one `leak:PATTERN` a line (`#`
    /// comments), matched against every frame's function, source file and module (`*` any
    /// characters, `^` and `$` anchors). A lost block a rule matches is no finding and not in
    /// the lost totals; the summary says how much each rule suppressed.
    /// Example: --suppress lsan.supp
    #[arg(long, value_name = "FILE")]
    pub suppress: Option<PathBuf>,

    /// Do not check for leaks at a launched or followed process's exit: every block live at
    /// the end is then reported as live, unclassified.
    #[arg(long)]
    pub no_leak_check: bool,

    /// Give up a leak check that keeps the process stopped longer than MS milliseconds: it
    /// runs on at once, and the report says the check was given up.
    /// Example: --leak-check --leak-check-max-pause 50
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub leak_check_max_pause: Option<u64>,

    /// While tracing, serve over HTTP at ADDR (a loopback address and port): /metrics for
    /// Prometheus (bytes and calls per path, live and resident bytes, allocator calls, faults,
    /// slab caches, the top sites, leak suspects; OpenMetrics when asked), /debug/pprof/heap and
    /// /debug/pprof/allocs (?seconds=N) for go tool pprof, Parca and Pyroscope, /report.html.
    /// Refreshed every --interval (1 s without it). Port 0 picks a free one (printed).
    /// Example: --listen 127.0.0.1:9464 --pid 1234
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Allow --listen on an address other than loopback; needs --listen-token. The endpoints
    /// expose the target's symbols and memory layout to whoever holds the token.
    #[arg(long, requires = "listen")]
    pub listen_any: bool,

    /// Require `Authorization: Bearer TOKEN` on every request, the token being the first line
    /// of FILE (a regular file, readable by its owner only). Without it, the endpoints that
    /// show the target's memory layout (pprof, /report.html) answer only root and the target's
    /// own user, and /metrics anyone on this machine. Example: --listen-token /etc/tracer/token
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub listen_token: Option<PathBuf>,

    /// Call sites with their own series in /metrics: those with the most live bytes. Bounds
    /// the label cardinality Prometheus stores. Example: --max-metric-sites 50
    #[arg(long, value_name = "N", default_value_t = 20, requires = "listen")]
    pub max_metric_sites: usize,

    /// Exit with status 3 (when the command itself succeeded) if CONDITION holds on the run's
    /// summary: `METRIC OP VALUE`, OP one of > >= < <= ==, VALUE a number with an optional K,
    /// M or G. Repeatable; each is reported. Metrics: allocs, bytes, frees, live_bytes,
    /// peak_live_bytes, leaked_bytes, leaked_blocks (live at the end), lost_bytes,
    /// lost_blocks, indirect_bytes, possible_bytes, reachable_bytes (the leak check's: a
    /// condition on them fails when no check ran), leak_suspects, brk_bytes, mmap_bytes,
    /// thread_arena_bytes, buddy_pages, slab_objects, page_faults, memory_syscalls,
    /// dropped_events. Changes from a baseline (+N, N%) belong to `tracer diff`.
    /// Example: tracer --fail-if 'lost_bytes>0' -- ./run-tests
    #[arg(long, value_name = "CONDITION", value_parser = parse_run_gate)]
    pub fail_if: Vec<Gate>,

    /// Write a recording of the run to PATH, to report on later with `tracer report PATH`;
    /// `-` streams it to stdout. If writing it fails mid-run (a full disk), the recording
    /// stops with a warning and the run goes on. It becomes PATH when the run ends; until then
    /// it is `.NAME.<pid>.<random>.tmp` beside it, which is what is left if tracer is killed:
    /// `tracer report` reads such a cut recording up to its last whole batch of events, and
    /// says how much is missing (the next run that writes NAME removes it). Example: --record
    /// run.trace
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,

    /// With --record: keep the recording within about BYTES (K, M, G suffixes, at least 1M) on
    /// a long run: its newest whole batches of events are kept, the oldest cut, and the report
    /// says how many events were cut (blocks allocated before then are not known to it).
    /// Example: --record run.trace --record-max 1G
    #[arg(long, value_name = "BYTES", requires = "record", value_parser = parse_record_max)]
    pub record_max: Option<u64>,

    /// Under sudo, run the command as root, as sudo would, instead of as the invoking user.
    /// Example: sudo tracer --run-as-root -- ./needs-root
    #[arg(long, conflicts_with = "pid")]
    pub run_as_root: bool,

    #[command(flatten)]
    pub output: OutputArgs,

    /// More on stderr: -v the run's phases and how long each took, -vv diagnostics, -vvv the
    /// eBPF loader's own logs too.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command to start and trace, after `--`. It is held at its first instruction until every probe is
    /// attached, so nothing it does is missed; tracer exits with its exit status.
    /// Example: -- ./app --port 8080
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// The reports to write; the same for a live run and for `tracer report`: an option for each
/// file format of the registry ([`Format`]), and `--quiet`.
#[derive(Debug, Clone, Default)]
pub struct OutputArgs {
    /// The formats given, with their paths.
    pub files: Vec<(Format, PathBuf)>,
    pub quiet: bool,
}

impl OutputArgs {
    /// Where OOM reports go without `--on-oom`: beside the first report file, else here.
    fn oom_dir(&self) -> PathBuf {
        self.files
            .iter()
            .map(|(_, path)| path.parent().unwrap_or(std::path::Path::new("")))
            .find(|dir| !dir.as_os_str().is_empty() && *dir != std::path::Path::new("/dev"))
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf()
    }

    fn outputs(self) -> Outputs {
        Outputs {
            text: !self.quiet,
            files: self.files,
        }
    }
}

/// `--quiet`'s id.
const QUIET: &str = "quiet";

impl Args for OutputArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = Format::files().fold(cmd, |cmd, format| {
            let spec = format.spec();
            let option = spec.option.expect("a file format has an option");
            cmd.arg(
                clap::Arg::new(option)
                    .long(option)
                    .value_name(spec.value_name)
                    .help(spec.help)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
        });
        cmd.arg(
            clap::Arg::new(QUIET)
                .short('q')
                .long(QUIET)
                .action(ArgAction::SetTrue)
                .help("Do not print the summary to stderr (use with the file outputs)"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for OutputArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(OutputArgs {
            files: Format::files()
                .filter_map(|format| {
                    let option = format.spec().option?;
                    let path = matches.get_one::<PathBuf>(option)?;
                    Some((format, path.clone()))
                })
                .collect(),
            quiet: matches.get_flag(QUIET),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare two runs, each a recording (--record) or a JSON summary (--json): totals per
    /// path, sites matched by their resolved frames (so two builds compare), new and vanished
    /// sites, findings and leak suspects that appeared or went; text on stderr, --json, --html.
    /// With --fail-if, exit status 3 when a condition holds: gate CI on memory.
    /// Example: tracer diff before.trace after.trace --fail-if 'live_bytes>+10%'
    Diff(DiffArgs),
    /// An interactive view of a live run, refreshed every --interval (1 s): the paths, drops,
    /// and a table of sites sortable by live bytes (l), growth (g), allocation rate (r), bytes
    /// (b) and resident bytes (p); Enter shows a site's whole stack and chain, s writes a
    /// snapshot of every report (or a JSON summary, when none was asked for), q quits (and
    /// ends a command top launched). The reports asked for are written when it ends, as for
    /// any run. Takes the options of a run.
    /// Example: sudo tracer top --pid 1234
    Top {
        /// Run options and the target: --pid PID or -- COMMAND, as for `tracer`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "OPTIONS"
        )]
        args: Vec<OsString>,
    },
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
    /// Parses the command line, exiting on errors as clap does. `tracer top ARGS...` is a run
    /// with ARGS and the interactive view (the `bool`): its options are a run's, `--` included.
    pub fn parse_with_top(args: impl IntoIterator<Item = OsString>) -> (Cli, bool) {
        match Cli::try_parse_with_top(args) {
            Ok(parsed) => parsed,
            Err(e) => e.exit(),
        }
    }

    pub fn try_parse_with_top(
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<(Cli, bool), clap::Error> {
        let args: Vec<OsString> = args.into_iter().collect();
        Cli::parse_args(&args).map_err(|e| hint(e, &args))
    }

    fn parse_args(args: &[OsString]) -> Result<(Cli, bool), clap::Error> {
        if args.get(1).is_some_and(|a| a == "top") {
            let rest =
                std::iter::once(OsString::from("tracer top")).chain(args[2..].iter().cloned());
            let cli = Cli::try_parse_from(rest)?;
            if cli.subcommand.is_some() {
                return Err(<Cli as clap::CommandFactory>::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "tracer top takes run options and a target, not another subcommand",
                ));
            }
            return Ok((cli, true));
        }
        Ok((Cli::try_parse_from(args)?, false))
    }

    /// `--tid` narrows a `--pid` run: with a launched command it has nothing to narrow.
    fn check_tid(&self) -> Result<(), clap::Error> {
        if self.tid.is_some() && self.pid.is_none() {
            return Err(<Cli as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--tid narrows a --pid run to one of its threads: give --pid PID too",
            ));
        }
        Ok(())
    }

    pub fn into_action(self) -> Result<Action, clap::Error> {
        match self.subcommand {
            Some(Command::Report { recording, output }) => {
                return Ok(Action::Report {
                    recording,
                    outputs: output.outputs(),
                });
            }
            Some(Command::Diff(args)) => return Ok(Action::Diff(args)),
            Some(Command::Top { .. }) => {
                // `tracer top ARGS` is parsed by `parse_with_top` as a run; only `--help`'s
                // listing sees the subcommand.
                return Err(<Cli as clap::CommandFactory>::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "tracer top takes run options and a target: tracer top --pid PID",
                ));
            }
            None => {}
        }
        self.into_config().map(|c| Action::Run(Box::new(c)))
    }

    pub fn into_config(self) -> Result<RunConfig, clap::Error> {
        use clap::{CommandFactory, error::ErrorKind};
        self.check_tid()?;
        let target = match (self.pid, self.cgroup, self.command.is_empty()) {
            _ if self.system => TargetSpec::System {
                empty: self.system_empty_programs,
            },
            (Some(pid), None, true) => TargetSpec::Pid(pid),
            (None, Some(path), true) => TargetSpec::Cgroup(path),
            (None, None, false) => TargetSpec::Command(self.command),
            _ => {
                return Err(Cli::command().error(
                    ErrorKind::MissingRequiredArgument,
                    "nothing to trace: give --pid PID, --cgroup PATH, --system or -- COMMAND \
                     [ARGS...]",
                ));
            }
        };
        let cgroup = matches!(target, TargetSpec::Cgroup(_));
        if self.system
            && let Some((format, _)) = self.output.files.iter().find(|(f, _)| *f != Format::Json)
        {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--system reports the machine's processes as text and --json; --{} shows \
                     one traced program's call sites (trace it with --pid or --cgroup)",
                    format.spec().option.unwrap_or("?")
                ),
            ));
        }
        let on_oom = self.on_oom.clone().unwrap_or_else(|| self.output.oom_dir());
        if self.duration.is_some() && matches!(target, TargetSpec::Command(_)) {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--duration applies to --pid, --cgroup and --system runs; a launched command is \
                 traced until it exits",
            ));
        }
        if self.listen_any && self.listen_token.is_none() {
            return Err(Cli::command().error(
                ErrorKind::MissingRequiredArgument,
                "--listen-any serves beyond this machine: give --listen-token FILE too, so that \
                 the endpoints ask for it",
            ));
        }
        if self.sample.is_some() && self.mode == Mode::Kernel {
            return Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "--sample samples allocator calls, which --mode kernel does not probe",
            ));
        }
        Ok(RunConfig {
            target,
            duration: self.duration,
            ring_bytes: self.buffer_size,
            allocator_libs: self.allocator_lib,
            max_sites: self.max_sites.unwrap_or(DEFAULT_MAX_SITES),
            text_sites: self.max_sites,
            wrappers: self.wrapper,
            stacks: self.stacks,
            kernel_stacks: self.kernel_stacks,
            kernel: !self.no_kernel,
            max_stacks: self.max_stacks,
            record: self.record,
            record_max: self.record_max,
            jsonl_max: self.jsonl_max,
            outputs: self.output.outputs(),
            run_as_root: self.run_as_root,
            mode: self.mode,
            fault_stacks: self.fault_stacks,
            uprobe_links: self.uprobe_links,
            kernel_probes: self.kernel_probes,
            sample_bytes: self.sample.unwrap_or(0),
            interval: self.interval,
            jsonl: self.jsonl,
            min_age: self.min_age.unwrap_or_default(),
            suppressions: match &self.suppress {
                Some(path) => suppression_rules(path)?,
                None => Vec::new(),
            },
            leak_check: crate::runtime::LeakChecks {
                at_exit: !self.no_leak_check,
                at_end: self.leak_check,
                max_pause: self.leak_check_max_pause.map(Duration::from_millis),
            },
            listen: self.listen.map(|addr| crate::runtime::Listen {
                addr,
                any: self.listen_any,
                token: self.listen_token,
                max_metric_sites: self.max_metric_sites,
            }),
            top: false,
            fail_if: self.fail_if,
            tid: self.tid,
            // A cgroup's processes are followed: what they create stays in it.
            follow: self.follow || cgroup,
            on_oom,
            on_pressure: self.on_pressure,
            pressure_file: self.pressure_file,
            costs: self.costs,
            unwind_row_cache: !self.no_unwind_cache,
        })
    }
}

/// The rules of a `--suppress` file, each line checked.
fn suppression_rules(path: &std::path::Path) -> Result<Vec<String>, clap::Error> {
    let bad = |why: String| {
        <Cli as clap::CommandFactory>::command().error(
            clap::error::ErrorKind::InvalidValue,
            format!("--suppress {}: {why}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    crate::summary::suppress::Suppressions::parse(&text).map_err(|e| bad(e.to_string()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

const MAX_SECONDS: f64 = 365.0 * 86400.0;

pub use crate::summary::DEFAULT_MAX_SITES;

fn parse_wrapper(s: &str) -> Result<String, String> {
    crate::summary::plumbing::Plumbing::new(&[s.to_string()])
        .map(|_| s.to_string())
        .map_err(|e| format!("not a regular expression: {e}"))
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, got {s}"));
    }
    if secs > MAX_SECONDS {
        return Err(format!(
            "duration {s} is too long: at most {MAX_SECONDS} seconds (a year); leave --duration \
             out to trace until the process exits or Ctrl-C"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_record_max(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 1 << 20 {
        return Err(format!("{s} is below 1M"));
    }
    Ok(n)
}

fn parse_gate(s: &str) -> Result<Gate, String> {
    Gate::parse(s).map_err(|e| e.to_string())
}

/// A run's condition: on its own numbers (no baseline).
fn parse_run_gate(s: &str) -> Result<Gate, String> {
    let g = parse_gate(s)?;
    if g.relative() {
        return Err(crate::diff::gate::GateError::NeedsBaseline(s.into()).to_string());
    }
    Ok(g)
}

/// At least 50 ms: each interval summarizes every site.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s).map_err(|e| e.replace("duration", "interval"))?;
    if d < Duration::from_millis(50) {
        return Err(format!("interval {s} is too short: at least 0.05 seconds"));
    }
    Ok(d)
}

fn parse_min_age(s: &str) -> Result<Duration, String> {
    parse_seconds(s).map_err(|e| e.replace("duration", "minimum age"))
}

/// A size with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.trim().to_ascii_uppercase() {
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1u64 << 10),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1 << 20),
        t if t.ends_with('G') => (t[..t.len() - 1].to_string(), 1 << 30),
        t => (t, 1),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size"))?;
    // Saturating: callers bound it, and say so in their own terms.
    Ok(n.saturating_mul(mult))
}

fn parse_sample_bytes(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if n == 0 {
        return Err("the sampling interval must be at least 1 byte".into());
    }
    u32::try_from(n).map_err(|_| format!("the sampling interval {s} is above 4G-1"))
}

/// Clap's error, with the fix for the mistakes people make most: a command given without `--`
/// (`tracer ls` is `tracer -- ls`), and a negative value (clap's tip to put it after `--`
/// would make it the command).
fn hint(e: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::{CommandFactory, error::ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand
    ) {
        return e;
    }
    let Some(bad) = e
        .get(clap::error::ContextKind::InvalidArg)
        .map(ToString::to_string)
    else {
        return e;
    };
    let at = args.iter().position(|a| a.to_string_lossy() == bad);
    let option = at
        .and_then(|i| i.checked_sub(1))
        .map(|i| args[i].to_string_lossy().into_owned())
        .filter(|o| o.starts_with("--"));
    let message = if bad.starts_with('-') && bad[1..].starts_with(|c: char| c.is_ascii_digit()) {
        match option {
            Some(option) => format!("{option} {bad}: a negative value is not allowed"),
            None => format!("{bad}: a negative value is not allowed"),
        }
    } else if !bad.starts_with('-') {
        let rest: Vec<String> = at
            .map(|i| {
                args[i..]
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "'{bad}' is not a tracer subcommand (report, diff, top); to trace a command, put it \
             after --: tracer -- {}",
            rest.join(" ")
        )
    } else {
        return e;
    };
    Cli::command().error(ErrorKind::ArgumentConflict, message)
}

/// A path that is a regular file now (a FIFO or a device would be read from for ever).
fn parse_regular_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_buffer_size(s: &str) -> Result<u32, String> {
    Some(parse_size(s)?)
        .map(|b| b.max(4096))
        .and_then(u64::checked_next_power_of_two)
        .filter(|&b| b <= 1 << 30)
        .and_then(|b| u32::try_from(b).ok())
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
        assert_eq!(
            cfg.outputs.path(Format::Json),
            Some(&PathBuf::from("o.json"))
        );
        assert!(cfg.outputs.text);
        assert_eq!(cfg.ring_bytes, 8 << 20);
    }

    #[test]
    fn cgroup_and_system_targets() {
        let cfg = parse(&[
            "tracer",
            "--cgroup",
            "/sys/fs/cgroup/memory/app",
            "--duration",
            "5",
        ])
        .unwrap();
        assert!(matches!(&cfg.target, TargetSpec::Cgroup(p) if p.ends_with("app")));
        // A cgroup's processes are followed; OOM reports go here without --on-oom.
        assert!(cfg.follow);
        assert_eq!(cfg.on_oom, std::path::Path::new("."));
        let cfg = parse(&["tracer", "--cgroup", "/x", "--json", "/var/tmp/r/out.json"]).unwrap();
        assert_eq!(cfg.on_oom, std::path::Path::new("/var/tmp/r"));
        assert!(parse(&["tracer", "--cgroup", "/x", "--pid", "1"]).is_err());
        let cfg = parse(&["tracer", "--system", "--json", "m.json"]).unwrap();
        assert!(matches!(cfg.target, TargetSpec::System { empty: false }));
        let err = parse(&["tracer", "--system", "--html", "m.html"]).unwrap_err();
        assert!(
            err.to_string().contains("--html shows one traced program"),
            "{err}"
        );
        assert!(parse(&["tracer", "--system", "--pid", "1"]).is_err());
        assert!(parse(&["tracer", "--system", "--interval", "1"]).is_err());
        let trigger = parse(&["tracer", "--pid", "1", "--on-pressure", "some avg10>20"])
            .unwrap()
            .on_pressure
            .unwrap();
        assert_eq!(trigger.above, 20.0);
        assert!(parse(&["tracer", "--pid", "1", "--on-pressure", "avg10>20"]).is_err());
        assert!(parse(&["tracer", "--pid", "1", "--pressure-file", "/x"]).is_err());
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
        let err = parse(&["tracer", "--pid", "1", "--duration", "1e20"]).unwrap_err();
        assert!(err.to_string().contains("is too long"), "{err}");
        assert!(parse(&["tracer", "--pid", "1", "--duration", "31536000"]).is_ok());
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
                assert_eq!(outputs.path(Format::Json), Some(&PathBuf::from("-")));
                assert!(!outputs.text);
            }
            other => panic!("{other:?}"),
        }
        // Run options do not go with the subcommand.
        assert!(Cli::try_parse_from(["tracer", "--pid", "1", "report", "x"]).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["tracer", "--", "ls"]).unwrap().mode, Mode::Full);
        let cfg = parse(&["tracer", "--mode", "kernel", "--fault-stacks", "--pid", "1"]).unwrap();
        assert_eq!((cfg.mode, cfg.fault_stacks), (Mode::Kernel, true));
        assert!(parse(&["tracer", "--mode", "sampled", "--", "ls"]).is_err());
        // Fault stacks need the fault tracepoint.
        assert!(parse(&["tracer", "--fault-stacks", "--no-kernel", "--", "ls"]).is_err());
        assert!(parse(&["tracer", "--run-as-root", "--pid", "1"]).is_err());
    }

    #[test]
    fn top_takes_run_options() {
        let top = |args: &[&str]| {
            let (cli, top) = Cli::try_parse_with_top(args.iter().map(OsString::from))?;
            let mut action = cli.into_action()?;
            if let Action::Run(cfg) = &mut action {
                cfg.top = top;
            }
            Ok::<_, clap::Error>(action)
        };
        match top(&["tracer", "top", "--pid", "12", "--interval", "2"]).unwrap() {
            Action::Run(cfg) => {
                assert!(cfg.top);
                assert!(matches!(cfg.target, TargetSpec::Pid(12)));
                assert_eq!(cfg.interval, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        match top(&["tracer", "top", "--", "./app", "-x"]).unwrap() {
            Action::Run(cfg) => match &cfg.target {
                TargetSpec::Command(argv) => assert_eq!(argv, &["./app", "-x"]),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert!(
            top(&["tracer", "top"])
                .unwrap_err()
                .to_string()
                .contains("nothing to trace")
        );
        assert!(top(&["tracer", "top", "report", "x"]).is_err());
        assert!(!parse(&["tracer", "--pid", "1"]).unwrap().top);
    }

    #[test]
    fn gates_and_diff() {
        let cfg = parse(&["tracer", "--fail-if", "leaked_bytes>0", "--", "true"]).unwrap();
        assert_eq!(cfg.fail_if.len(), 1);
        let err = parse(&["tracer", "--fail-if", "live_bytes>+10%", "--", "true"]).unwrap_err();
        assert!(err.to_string().contains("tracer diff"), "{err}");
        let err = parse(&["tracer", "--fail-if", "nonsense>1", "--", "true"]).unwrap_err();
        assert!(err.to_string().contains("unknown metric"), "{err}");
        let cli = Cli::try_parse_from([
            "tracer",
            "diff",
            "a.trace",
            "b.json",
            "--fail-if",
            "allocs>+5%",
            "--json",
            "-",
        ])
        .unwrap();
        match cli.into_action().unwrap() {
            Action::Diff(d) => {
                assert_eq!((d.before, d.after), ("a.trace".into(), "b.json".into()));
                assert_eq!(d.fail_if[0].metric, "allocs");
                assert_eq!(d.json, Some(PathBuf::from("-")));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["tracer", "diff", "a.trace"]).is_err());
    }

    #[test]
    fn live_options() {
        let cfg = parse(&["tracer", "--interval", "0.5", "--jsonl", "-", "--pid", "1"]).unwrap();
        assert_eq!(cfg.interval, Some(Duration::from_millis(500)));
        assert_eq!(cfg.jsonl, Some(PathBuf::from("-")));
        assert_eq!(cfg.min_age, Duration::ZERO);
        let err = parse(&["tracer", "--jsonl", "x.jsonl", "--pid", "1"]).unwrap_err();
        assert!(err.to_string().contains("--interval"), "{err}");
        let err = parse(&["tracer", "--interval", "0.01", "--pid", "1"]).unwrap_err();
        assert!(err.to_string().contains("at least 0.05"), "{err}");
        let err = parse(&["tracer", "--interval=-1", "--pid", "1"]).unwrap_err();
        assert!(
            err.to_string().contains("interval must be positive"),
            "{err}"
        );
        let cfg = parse(&["tracer", "--min-age", "30", "--", "true"]).unwrap();
        assert_eq!(cfg.min_age, Duration::from_secs(30));
        assert!(parse(&["tracer", "--min-age", "soon", "--", "true"]).is_err());
    }

    #[test]
    fn sample_sizes() {
        assert_eq!(parse_sample_bytes("512K"), Ok(512 << 10));
        assert_eq!(parse_sample_bytes("1"), Ok(1));
        assert!(parse_sample_bytes("0").unwrap_err().contains("at least 1"));
        assert!(parse_sample_bytes("4G").unwrap_err().contains("above 4G-1"));
        assert!(parse_sample_bytes("18446744073709551615K").is_err());
        assert!(parse_sample_bytes("lots").is_err());
        let cfg = parse(&["tracer", "--sample", "1M", "--", "true"]).unwrap();
        assert_eq!(cfg.sample_bytes, 1 << 20);
        assert_eq!(parse(&["tracer", "--", "true"]).unwrap().sample_bytes, 0);
        let err = parse(&["tracer", "--sample", "1M", "--mode", "kernel", "--", "true"]);
        assert!(err.unwrap_err().to_string().contains("--mode kernel"));
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(parse_buffer_size("64M"), Ok(64 << 20));
        assert_eq!(parse_buffer_size("100k"), Ok(128 << 10));
        assert_eq!(parse_buffer_size("1"), Ok(4096));
        assert!(parse_buffer_size("2G").is_err());
        // Values that would wrap are refused, not turned into 0.
        for huge in [
            "18446744073709551615",
            "18446744073709551615K",
            "9223372036854775809",
        ] {
            let err = parse_buffer_size(huge).unwrap_err();
            assert!(err.contains("above the 1G limit"), "{huge}: {err}");
        }
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
            "--mode kernel",
            "--run-as-root",
            "tracer top --pid",
            "--listen 127.0.0.1:9464",
            "tracer diff",
            "Exit status:",
        ] {
            assert!(help.contains(needle), "help lacks {needle}:\n{help}");
        }
    }

    #[test]
    fn listening_beyond_this_machine_needs_a_token() {
        let err = parse(&[
            "tracer",
            "--listen",
            "0.0.0.0:9464",
            "--listen-any",
            "--pid",
            "1",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("give --listen-token"), "{err}");
        let cfg = parse(&[
            "tracer",
            "--listen",
            "0.0.0.0:9464",
            "--listen-any",
            "--listen-token",
            "t",
            "--pid",
            "1",
        ])
        .unwrap();
        assert!(cfg.listen.unwrap().any);
    }

    /// The mistakes people make most get their fix, not clap's generic tip.
    #[test]
    fn mistakes_get_a_hint() {
        let err = |args: &[&str]| {
            Cli::try_parse_with_top(args.iter().map(OsString::from))
                .and_then(|(cli, _)| cli.into_action().map(|_| ()))
                .unwrap_err()
                .to_string()
        };
        let e = err(&["tracer", "ls", "-l"]);
        assert!(
            e.contains("to trace a command, put it after --: tracer -- ls -l"),
            "{e}"
        );
        let e = err(&["tracer", "--interval", "-1", "--pid", "1"]);
        assert!(
            e.contains("--interval -1: a negative value is not allowed"),
            "{e}"
        );
        assert!(!e.contains("tip:"), "{e}");
        let e = err(&["tracer", "--tid", "5", "--", "true"]);
        assert!(e.contains("--tid narrows a --pid run"), "{e}");
    }

    #[test]
    fn jsonl_max_bounds_the_jsonl_file() {
        let cfg = parse(&[
            "tracer",
            "--interval",
            "1",
            "--jsonl",
            "l.jsonl",
            "--jsonl-max",
            "64M",
            "--pid",
            "1",
        ])
        .unwrap();
        assert_eq!(cfg.jsonl_max, Some(64 << 20));
        assert!(parse(&["tracer", "--jsonl-max", "64M", "--pid", "1"]).is_err());
        let err = parse(&[
            "tracer",
            "--interval",
            "1",
            "--jsonl",
            "l.jsonl",
            "--jsonl-max",
            "5K",
            "--pid",
            "1",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("below 1M"), "{err}");
    }
}
