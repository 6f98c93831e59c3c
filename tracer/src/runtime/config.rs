//! What a run is asked to do: the validated configuration the command line makes.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use crate::{
    output::Outputs,
    probes::{kernel::KernelProbes, uprobes::UprobeLinks},
};

/// What to trace.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    Pid(i32),
    Command(Vec<OsString>),
    /// `--cgroup`: every process in this cgroup, its child cgroups included.
    Cgroup(PathBuf),
    /// `--system`: every process on the machine, counted in the kernel; `empty`: programs
    /// that return at once (the bench's floor).
    System {
        empty: bool,
    },
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: TargetSpec,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    /// Files to probe for allocator functions besides those found automatically.
    pub allocator_libs: Vec<PathBuf>,
    /// Most call sites and leaks listed in the summary.
    pub max_sites: usize,
    /// Record kernel stacks of page and slab allocations.
    pub kernel_stacks: bool,
    /// Follow the kernel's allocators (buddy, slab) and page faults.
    pub kernel: bool,
    /// Entries of the user stack map: distinct allocation stacks that can be told apart
    /// (`None`: sized from the target's code).
    pub max_stacks: Option<u32>,
    /// Write a recording here.
    pub record: Option<PathBuf>,
    /// `--record-max`: keep the recording's newest events within about this many bytes.
    pub record_max: Option<u64>,
    /// `--jsonl-max`: keep the `--jsonl` file's newest lines within about this many bytes.
    pub jsonl_max: Option<u64>,
    pub outputs: Outputs,
    /// Under sudo, run the command as root anyway (not as the invoking user).
    pub run_as_root: bool,
    pub mode: Mode,
    /// Record the user stack of every page fault.
    pub fault_stacks: bool,
    /// How allocator probes attach.
    pub uprobe_links: UprobeLinks,
    /// How the tracepoint programs attach.
    pub kernel_probes: KernelProbes,
    /// `--sample`: mean bytes between sampled allocations (0: trace every call).
    pub sample_bytes: u32,
    /// `--interval`: a summary of what changed, this often, while the run goes on.
    pub interval: Option<Duration>,
    /// `--jsonl`: the intervals as JSON lines here.
    pub jsonl: Option<PathBuf>,
    /// `--min-age`: leaks count only blocks at least this old.
    pub min_age: Duration,
    /// When live blocks are checked for reachability.
    pub leak_check: LeakChecks,
    /// `--suppress`: leak rules (`leak:PATTERN`), checked.
    pub suppressions: Vec<String>,
    /// `--listen`: serve metrics and profiles over HTTP while tracing.
    pub listen: Option<Listen>,
    /// `tracer top`: the interactive view while tracing.
    pub top: bool,
    /// `--tid`: only this thread's allocator calls are traced.
    pub tid: Option<u32>,
    /// `--fail-if`: conditions on the summary that fail the run.
    pub fail_if: Vec<crate::diff::gate::Gate>,
    /// `--follow`: trace the processes the target creates, and what they run.
    pub follow: bool,
    /// `--max-sites`, when given: what the text lists too.
    pub text_sites: Option<usize>,
    /// `--wrapper`: the program's own allocator wrappers.
    pub wrappers: Vec<String>,
    /// `--stacks`: how allocation stacks are walked.
    pub stacks: StackWalk,
    /// `--on-oom`: where a traced process's report goes when the OOM killer chooses it.
    pub on_oom: PathBuf,
    /// `--on-pressure`: a snapshot when memory pressure rises above this.
    pub on_pressure: Option<crate::process::cgroup::PressureTrigger>,
    /// `--pressure-file`: the pressure file `--on-pressure` watches.
    pub pressure_file: Option<PathBuf>,
    /// `--costs`: measure what the probes and the stack walks cost.
    pub costs: bool,
    /// The unwinder's caches: rows by address, a window of the stack (off only to check that
    /// they change nothing: `--no-unwind-cache`).
    pub unwind_row_cache: bool,
}

/// When the leak check runs (see `--leak-check` in `tracer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakChecks {
    /// At a launched or followed process's `_exit` (not `--no-leak-check`).
    pub at_exit: bool,
    /// When tracing ends, on processes still running (`--leak-check`).
    pub at_end: bool,
    /// `--leak-check-max-pause`.
    pub max_pause: Option<Duration>,
}

impl Default for LeakChecks {
    fn default() -> Self {
        LeakChecks {
            at_exit: true,
            at_end: false,
            max_pause: None,
        }
    }
}

/// How allocation stacks are walked (see `--stacks` in `tracer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StackWalk {
    /// With each file's unwind tables (.eh_frame), by frame pointer where a file has none.
    #[default]
    Dwarf,
    /// By frame pointer only (the kernel's walk): cut short past code built without them.
    Fp,
}

/// `--listen` and its options.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: String,
    /// `--listen-any`: a non-loopback address is allowed.
    pub any: bool,
    /// `--listen-token`: requests need `Authorization: Bearer` with this file's token.
    pub token: Option<PathBuf>,
    /// `--max-metric-sites`.
    pub max_metric_sites: usize,
}

/// What a run traces (see `--mode` in `tracer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Allocator calls through uprobes, and the kernel's side.
    #[default]
    Full,
    /// No uprobes: syscalls and faults with their user stacks, buddy and slab.
    Kernel,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Kernel => "kernel",
        }
    }
}
